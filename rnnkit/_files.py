"""Files written so that nothing a user saved is lost, and read so that a file cannot run code.

Writing: a temporary file beside the target (``.NAME.<16 hex digits>.tmp``, created with mode
0o666 so that the umask applies as to any other file), flushed and ``fsync``-ed, renamed over the
target, then the directory ``fsync``-ed: a reader, a killed process or a power cut leaves the old
file or the new one, never half of one. A full disk is a :class:`DiskFullError` naming the file.

Reading: :func:`load_weights_only` is ``torch.load(weights_only=True)``: tensors, plain
containers and the few classes registered as safe; anything else is refused before it is built.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import secrets
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import torch

# ".NAME.<16 hex>.tmp" (ours) or ".NAME.<8 characters>" (tempfile.mkstemp's, of earlier versions)
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?:[0-9a-f]{16}\.tmp|[a-z0-9_]{8})")
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space left to write a file; the previous version of the file is unchanged."""


class UnsafePickleError(ValueError):
    """A torch file holding objects other than tensors and plain containers (not unpickled)."""


def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Call ``write(file_name)`` on a temporary file beside ``path``, then rename it into place
    (for writers that want a file name; prefer :func:`atomic_write_stream`)."""
    with _temporary(Path(path)) as (handle, temporary):
        handle.close()
        write(str(temporary))
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())


def atomic_write_stream(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then rename it into place."""
    with _temporary(Path(path)) as (handle, _):
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()


@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """An open temporary file beside ``path``; renamed over ``path`` when the block ends, removed
    if it raises. A full disk becomes a :class:`DiskFullError`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = _create_temporary(path)
    handle = os.fdopen(descriptor, "wb")
    try:
        try:
            yield handle, temporary
            handle.close()
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):  # flushing what is left may fail the same way
                handle.close()
            temporary.unlink(missing_ok=True)
            raise
    except (OSError, RuntimeError) as error:
        if _is_disk_full(error, path.parent):
            raise DiskFullError(f"{path}: no space left on device (the previous file is unchanged)") from None
        raise
    _fsync_directory(path.parent)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new file ``.NAME.<random>.tmp`` beside ``path``, open for writing, mode 0o666 & ~umask."""
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temporary
        except FileExistsError:  # 2**64 names: practically never
            continue


def _is_disk_full(error: BaseException, directory: Path) -> bool:
    """ENOSPC/EDQUOT, also behind the error torch's zip writer raises on the way out; or that
    writer failing (it drops the errno) on a file system with no room left."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in _FULL:
            return True
        cause = cause.__cause__ or cause.__context__
    if "inline_container" not in str(error) and "PytorchStreamWriter" not in str(error):
        return False
    try:
        return os.statvfs(directory).f_bavail == 0
    except OSError:
        return False


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; some file systems cannot sync a directory, which is no error."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(descriptor)


def remove_stale_temporaries(directory: Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files a killed writer left beside the files ``names`` in
    ``directory`` (only names of the form the writers here make); returns what was deleted."""
    wanted = set(names)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        found = _TEMPORARY.fullmatch(entry.name)
        if found and found["name"] in wanted and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def load_weights_only(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU. A file that holds objects of other
    classes is an :class:`UnsafePickleError` (nothing of it was built); other failures (a
    corrupt or truncated file) propagate: :func:`describe` says them in one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error says enough
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found is None:
            raise
        raise UnsafePickleError(
            f"{path}: holds objects other than tensors and plain containers ({found[1]}); it was not unpickled"
        ) from None


def describe(error: BaseException) -> str:
    """A failed load in one line."""
    if isinstance(error, pickle.UnpicklingError):  # torch's text runs to paragraphs
        return "corrupt, truncated, or a pickle of other objects; it was not unpickled"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"
