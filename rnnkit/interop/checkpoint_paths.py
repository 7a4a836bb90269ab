"""Where a TF checkpoint is: every form of path ``tf.train.Saver.restore`` and
``tf.train.latest_checkpoint`` accept (a prefix, one of its files, a directory with or without
its ``checkpoint`` state file), resolved to the prefix, without TensorFlow. A path that names no
checkpoint is a ``FormatError`` listing what was tried."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ._bundle_format import is_file, utf8
from ._wire import FormatError, located
from .tf_checkpoint_v1 import v1_files

__all__ = ["resolve_prefix"]

_STATE_LIMIT = 1 << 20  # a `checkpoint` state file is a few lines; refuse to read a huge one


_FILE_SUFFIXES = (  # a checkpoint file's name given instead of its prefix: the suffix to drop
    re.compile(r"\.index$"),  # V2 index
    re.compile(r"\.data-\d{5,}-of-\d{5,}$"),  # V2 data shard
    re.compile(r"\.meta$"),  # the MetaGraphDef beside either format
    re.compile(r"-[\d?]+-of-\d+$"),  # V1 shard, or TF's glob for all of them (``-?????-of-00002``)
)
_SEPARATORS = ("/", os.sep)


def resolve_prefix(path: str | Path) -> str:
    """The prefix of the checkpoint ``path`` names, in every form TF's ``Saver.restore`` and
    ``latest_checkpoint`` accept, plus a few more:

    * a prefix: ``model.ckpt-1000`` (V2 files ``model.ckpt-1000.index`` and ``.data-*``; V1 the
      file itself or its shards ``model.ckpt-1000-0000i-of-0000N``), and a prefix ending in a
      separator, ``model.weights/`` (files ``model.weights/.index`` ...), kept as text since
      ``Path`` would drop the slash;
    * one of its files: ``.index``, ``.data-00000-of-00001``, ``.meta``, a V1 shard
      ``-00000-of-00002`` or TF's V1 glob ``-?????-of-00002``;
    * a directory with a ``checkpoint`` state file (its ``model_checkpoint_path``, relative to
      the directory as TF reads it; an absolute path that no longer exists is looked for beside
      the state file, as when a run directory was moved, where TF would give up);
    * a directory without a state file holding exactly one checkpoint (TF needs the state file).

    Returns the prefix as text (``f"{prefix}.index"`` names the V2 index). Raises
    ``FormatError`` naming ``path`` and every prefix tried when none holds a checkpoint.
    """
    text = _path_text(path)
    tried: list[str] = []
    found = _checkpoint_at(text, tried)
    if found is not None:
        return found
    if os.path.isdir(text):
        return _directory_prefix(text, tried)
    raise FormatError(f"{text}: no checkpoint there ({_tried_text(tried)})")


def _path_text(path: str | Path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or a path to a TF checkpoint, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise TypeError(f"path must name a TF checkpoint as a non-empty str, got {text!r}")
    return text


def _checkpoint_at(text: str, tried: list[str]) -> str | None:
    """``text`` as a prefix or as one of a checkpoint's files: the prefix if a checkpoint is
    there (V2 first, as TF), else None; every prefix looked at is added to ``tried``."""
    if _is_v2(text, tried):
        return text
    for suffix in _FILE_SUFFIXES:
        match = suffix.search(text)
        if match and match.start() > 0:
            stripped = text[: match.start()]
            return stripped if _is_v2(stripped, tried) or _is_v1(stripped, tried) else None
    return text if _is_v1(text, tried) else None


def _is_v2(prefix: str, tried: list[str]) -> bool:
    tried.append(prefix)
    return is_file(Path(f"{prefix}.index"))


def _is_v1(prefix: str, tried: list[str]) -> bool:
    if prefix.endswith(_SEPARATORS):  # a directory's name: never a V1 file
        return False
    if prefix not in tried:
        tried.append(prefix)
    return bool(v1_files(Path(prefix)))


def _tried_text(tried: list[str]) -> str:
    unique = list(dict.fromkeys(tried))
    return "; ".join(f"no such checkpoint index {p}.index and no V1 file {p} or {p}-NNNNN-of-NNNNN" for p in unique)


def _directory_prefix(directory: str, tried: list[str]) -> str:
    """The checkpoint of a directory: the one its state file names, else its only one."""
    state = Path(directory) / "checkpoint"
    if is_file(state):
        return _state_file_prefix(state)
    found = _checkpoints_in(Path(directory))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FormatError(
            f"{directory}: no checkpoint there: a directory without a 'checkpoint' state file and without"
            f" checkpoint files ({_tried_text(tried)})"
        )
    listed = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
    raise FormatError(
        f"{directory}: no 'checkpoint' state file to say which of its {len(found)} checkpoints is the"
        f" latest: {listed}; give one's prefix"
    )


_V1_FIRST_SHARD = re.compile(r"^(.*)-0{5,}-of-\d{5,}$")


def _checkpoints_in(directory: Path) -> list[str]:
    """The checkpoint prefixes in ``directory`` (sorted): every ``*.index`` (V2), every first V1
    shard ``*-00000-of-N``, and every V1 file ``X`` with its ``X.meta`` beside it."""
    try:
        entries = sorted(entry.name for entry in os.scandir(directory) if entry.is_file())
    except OSError as error:
        raise FormatError(f"{directory}: cannot list the directory ({error.strerror})") from None
    files = set(entries)
    found = set()
    for name in entries:
        if name.endswith(".index"):
            found.add(name[: -len(".index")])
        elif (first := _V1_FIRST_SHARD.match(name)) and not first.group(1).endswith(".data"):
            found.add(first.group(1))
        elif name.endswith(".meta") and name[: -len(".meta")] in files:
            found.add(name[: -len(".meta")])
    return [os.path.join(str(directory), prefix) for prefix in sorted(found)]


def _state_file_prefix(state: Path) -> str:
    """The checkpoint a ``checkpoint`` state file names, resolved as TF's
    ``get_checkpoint_state`` does (a relative path joined to the state file's directory)."""
    named = _state_file_target(state)
    directory = str(state.parent)
    tried: list[str] = []
    if os.path.isabs(named):
        found = _checkpoint_at(named, tried)
        if found is None:  # moved since it was written: its name beside the state file
            found = _checkpoint_at(os.path.join(directory, os.path.basename(named)), tried)
    else:
        found = _checkpoint_at(os.path.join(directory, named), tried)
    if found is None:
        raise FormatError(f"{state}: names {named!r}, but there is no checkpoint there ({_tried_text(tried)})")
    return found


_PATH_LINE = re.compile(rb'^[ \t]*model_checkpoint_path[ \t]*:[ \t]*"((?:[^"\\\n]|\\.)*)"', re.MULTILINE)


def _state_file_target(state: Path) -> str:
    """The ``model_checkpoint_path`` of a text-format ``CheckpointState`` (read at most 1 MiB)."""
    with located(str(state)), state.open("rb") as file:
        text = file.read(_STATE_LIMIT + 1)
        if len(text) > _STATE_LIMIT:
            raise FormatError(f"larger than {_STATE_LIMIT} bytes: not a checkpoint state file")
        match = _PATH_LINE.search(text)
        if match is None:
            raise FormatError("no model_checkpoint_path in it")
        named = utf8(_unescape(match.group(1)), "model_checkpoint_path")
        if not named or "\x00" in named:
            raise FormatError(f"model_checkpoint_path {named!r} is not a usable path")
        return named


_ESCAPES = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"a": b"\a", b"b": b"\b", b"f": b"\f", b"v": b"\v",
            b"\\": b"\\", b"'": b"'", b'"': b'"', b"?": b"?"}
_ESCAPE = re.compile(rb"\\([0-7]{1,3}|x[0-9a-fA-F]{1,2}|.)", re.DOTALL)


def _unescape(text: bytes) -> bytes:
    """A text-format proto string's bytes: C escapes (``\\ooo``, ``\\xhh``, ``\\n``, ...) decoded."""

    def one(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        if 0x30 <= code[0] <= 0x37:  # octal digits
            if int(code, 8) > 255:
                raise FormatError(f"an octal escape \\{code.decode()} beyond a byte")
            return bytes([int(code, 8)])
        if code.startswith(b"x") and len(code) > 1:
            return bytes([int(code[1:], 16)])
        if code in _ESCAPES:
            return _ESCAPES[code]
        raise FormatError(f"an unknown escape \\{code.decode('latin-1')} in a string")

    return _ESCAPE.sub(one, text)
