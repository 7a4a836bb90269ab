"""Seeded fuzzing of the TF checkpoint readers (V2 and V1): structural mutations that keep every
checksum valid (protos re-encoded with changed, dropped, repeated or mistyped fields, overlong
varints, reordered or repeated keys, rewritten block handles, missing shard files) and byte-level
flips and truncations. Every case must read back the right tensors or raise FormatError.

    python -m tests.fuzz_checkpoint --cases 5000 [--seed 1]

prints the count of each outcome; ``run`` is what the test suite calls with a small count.

"Right tensors": a tensor no mutation touched must read back exactly. One whose own entry (or
the header) was changed may read back differently only where the change is a valid
reinterpretation of the same checksummed bytes (a dtype of the same size, a shape with as many
elements, the other byte order) for V2; V1 files have no per-tensor checksum, so a touched V1
tensor's values are not checked (only that reading it gave an array or a FormatError).
"""

from __future__ import annotations

import argparse
import copy
import random
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.interop.tf_checkpoint import FormatError, load_variables

from .tf_bundle import Fixed32, Fixed64, Raw, bundle_parts, v1_parts, write_parts, write_v1_parts

_RNG = np.random.default_rng(11)
TENSORS = {
    "a/kernel": _RNG.standard_normal((5, 8)).astype(np.float32),
    "a/bias": _RNG.standard_normal(8).astype(np.float32),
    "d": _RNG.standard_normal((2, 3)),
    "h": _RNG.standard_normal(3).astype(np.float16),
    "i": np.arange(6, dtype=np.int64).reshape(3, 2),
    "flags": np.array([True, False]),
    "u": np.array([1, 250], np.uint8),
    "s": np.array(3, np.int32),
}
PARTITIONED = {"a/kernel": 3}
_INTERESTING = [0, 1, 2, 3, 7, 8, 19, 63, 64, 127, 128, 255, 256, 1 << 31, (1 << 31) - 1, 1 << 32, 1 << 40,
                (1 << 63) - 1, 1 << 63, (1 << 64) - 1, -1, -2, -(1 << 31), -(1 << 63)]


def _positions(tree: list) -> list[tuple[list, int]]:
    """Every ``(container, index)`` in a proto tree, nested messages included."""
    found = []
    for index, (_, value) in enumerate(tree):
        found.append((tree, index))
        if isinstance(value, list):
            found.extend(_positions(value))
    return found


def _mutate_value(value: Any, rng: random.Random) -> Any:
    if isinstance(value, bytes) and value and rng.random() < 0.5:
        data = bytearray(value)
        choice = rng.randrange(3)
        if choice == 0:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice == 1:
            del data[rng.randrange(len(data)) :]
        else:
            data += bytes([rng.randrange(256)])
        return bytes(data)
    choice = rng.randrange(6)
    if choice == 0:
        return rng.choice(_INTERESTING)
    if choice == 1:
        return Raw(0, b"\xff" * rng.choice([9, 10]) + bytes([rng.choice([0x01, 0x02, 0x7F])]))  # overlong
    if choice == 2:
        return Raw(rng.choice([1, 2, 3, 5, 6, 7]), bytes(rng.randrange(256) for _ in range(rng.randrange(9))))
    if choice == 3:
        return rng.choice([Fixed32(rng.getrandbits(32)), Fixed64(rng.getrandbits(64)), b"\x00\x01"])
    if choice == 4 and isinstance(value, int):
        return value + rng.choice([-1, 1, 2, 4, -4])
    return rng.randrange(30)


def mutate_tree(tree: list, rng: random.Random) -> None:
    """One random change to a proto tree, in place: a value replaced, a field dropped, repeated,
    renumbered or given a wrong wire type."""
    positions = _positions(tree)
    if not positions:
        tree.append((rng.randrange(1, 20), rng.choice(_INTERESTING)))
        return
    container, index = rng.choice(positions)
    number, value = container[index]
    action = rng.randrange(5)
    if action == 0:
        del container[index]
    elif action == 1:
        container.insert(index, (number, copy.deepcopy(value)))
    elif action == 2:
        container[index] = (rng.choice([number + 1, max(1, number - 1), rng.randrange(1, 20)]), value)
    else:
        container[index] = (number, _mutate_value(value, rng))


def _touched_ok(array: np.ndarray, original: np.ndarray) -> bool:
    """A touched V2 tensor: the same checksummed bytes, possibly reinterpreted."""
    stored = original.tobytes()
    flat = np.ascontiguousarray(array)
    candidates = [flat.tobytes(), flat.byteswap().tobytes()]
    if flat.dtype == np.float32:  # read as bfloat16: compare the kept 16 bits
        bits = (flat.view(np.uint32) >> 16).astype(np.uint16)
        candidates += [bits.tobytes(), bits.byteswap().tobytes()]
    return stored in candidates


def _check(arrays: dict, touched: set[str], version: int) -> str:
    for name, array in arrays.items():
        if name not in TENSORS:
            if "*" in touched or name in touched:  # a renamed key: a different, valid checkpoint
                continue
            return f"unexpected tensor {name!r}"
        original = TENSORS[name]
        if "*" in touched or name in touched:
            if version == 1 or _touched_ok(array, original):
                continue
            return f"{name}: touched, read back {array!r}"
        if array.dtype != original.dtype or array.shape != original.shape or not np.array_equal(array, original):
            return f"{name}: untouched but read back {array!r}"
    missing = set(TENSORS) - set(arrays) - touched
    if missing and "*" not in touched:
        return f"tensors lost: {sorted(missing)}"
    return ""


def _v2_case(folder: Path, rng: random.Random) -> set[str]:
    """Write one mutated V2 checkpoint at ``folder/c``; the names it touched."""
    bundle = bundle_parts(TENSORS, shards=2, partitioned=PARTITIONED)
    owner = {key: ("*" if key == b"" else next(n for n in TENSORS if n.encode() in key)) for key, _ in bundle.entries}
    touched: set[str] = set()
    sort, mangle = True, None
    for _ in range(rng.choice([1, 1, 1, 2])):
        kind = rng.randrange(10)
        if kind < 6:
            index = rng.randrange(len(bundle.entries))
            key, tree = bundle.entries[index]
            mutate_tree(tree, rng)
            touched.add(owner[key])
        elif kind == 6:  # a key repeated, dropped or changed
            index = rng.randrange(len(bundle.entries))
            key, tree = bundle.entries[index]
            touched.add(owner[key])
            action = rng.randrange(3)
            if action == 0:
                bundle.entries.append((key, copy.deepcopy(tree)))
            elif action == 1:
                del bundle.entries[index]
            elif key:
                changed = bytearray(key)
                changed[rng.randrange(len(changed))] = rng.randrange(256)
                bundle.entries[index] = (bytes(changed), tree)
                owner[bytes(changed)] = owner[key]
                touched.add(bytes(changed).decode("utf-8", "replace"))
        elif kind == 7:  # two entries swapped, written unsorted
            i, j = rng.randrange(len(bundle.entries)), rng.randrange(len(bundle.entries))
            bundle.entries.sort()
            bundle.entries[i], bundle.entries[j] = bundle.entries[j], bundle.entries[i]
            sort = False
        elif kind == 8:  # the index block's handles rewritten
            mangle = _mangler(rng)
        else:  # a shard file renamed away
            number = rng.randrange(len(bundle.shard_names))
            bundle.shard_names[number] = rng.choice(["data-00000-of-00003", "data-00009-of-00002", "gone"])
    write_parts(folder / "c", bundle, sort=sort, mangle_index=mangle)
    return touched


def _mangler(rng: random.Random):
    def mangle(handles: list) -> list:
        handles = list(handles)
        i = rng.randrange(len(handles))
        key, offset, size = handles[i]
        action = rng.randrange(4)
        if action == 0:
            handles.insert(i, (key, offset, size))
        elif action == 1:
            handles[i] = (key, max(0, offset + rng.choice([-5, -1, 1, 5])), size)
        elif action == 2:
            handles[i] = (key, offset, max(0, size + rng.choice([-5, -1, 1, 5])))
        else:
            handles[i] = (key, rng.choice(_INTERESTING) % (1 << 64), size)
        return handles

    return mangle


def _v1_case(folder: Path, rng: random.Random) -> set[str]:
    """Write one mutated V1 checkpoint (two shard files) at ``folder/c``; the names it touched."""
    files = v1_parts(TENSORS, {"a/kernel": 3}, shards=2)
    touched: set[str] = set()
    sort = True
    for _ in range(rng.choice([1, 1, 2])):
        file = rng.randrange(2)
        kind = rng.randrange(8)
        if kind < 2:
            mutate_tree(files.metas[file], rng)
            touched.add("*")
        elif kind < 6:
            index = rng.randrange(len(files.slices[file]))
            key, tree = files.slices[file][index]
            mutate_tree(tree, rng)
            touched.add(next(n for n in TENSORS if key.startswith(n.encode())))
        elif kind == 6:
            index = rng.randrange(len(files.slices[file]))
            key, tree = files.slices[file][index]
            touched.add(next(n for n in TENSORS if key.startswith(n.encode())))
            if rng.random() < 0.5:
                files.slices[file].append((key + b"\x07", copy.deepcopy(tree)))
            else:
                del files.slices[file][index]
        else:
            files.slices[file].reverse()
            sort = False
    paths = write_v1_parts(folder / "c", files, sort=sort)
    if rng.random() < 0.05:
        paths[rng.randrange(2)].unlink()
    return touched


def _byte_case(folder: Path, rng: random.Random, version: int) -> set[str]:
    """A valid checkpoint with a few bytes of one file changed, or the file truncated."""
    if version == 2:
        write_parts(folder / "c", bundle_parts(TENSORS, shards=2, partitioned=PARTITIONED))
    else:
        write_v1_parts(folder / "c", v1_parts(TENSORS, {"a/kernel": 3}, shards=2))
    target = rng.choice(sorted(folder.iterdir()))
    data = bytearray(target.read_bytes())
    if not data or rng.random() < 0.2:
        del data[rng.randrange(len(data) + 1) :]
    else:
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    target.write_bytes(bytes(data))
    return set()


def run_case(folder: Path, rng: random.Random) -> tuple[str, str, int]:
    """One case in an empty ``folder``: ``(outcome, detail, format version)``, outcome
    ``exact``, ``format_error`` or ``other`` (a failure)."""
    version = rng.choice([1, 2])
    if rng.random() < 0.25:
        touched = _byte_case(folder, rng, version)
    else:
        touched = _v2_case(folder, rng) if version == 2 else _v1_case(folder, rng)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arrays = load_variables(folder / "c")
    except FormatError as error:
        return "format_error", str(error), version
    except Exception as error:  # noqa: BLE001 - what the fuzzer is looking for
        return "other", f"V{version}: {type(error).__name__}: {error}", version
    problem = _check(arrays, touched, version)
    return ("other", f"V{version}: {problem}", version) if problem else ("exact", "", version)


def run(count: int, seed: int = 0, verbose: bool = False) -> Counter:
    """``count`` seeded cases; the count of each outcome (``other`` must stay 0), with the
    first few failures' details under ``("other", detail)`` keys."""
    rng = random.Random(seed)
    outcomes: Counter = Counter()
    with tempfile.TemporaryDirectory() as scratch:
        for number in range(count):
            folder = Path(scratch) / str(number)
            folder.mkdir()
            outcome, detail, version = run_case(folder, rng)
            outcomes[outcome] += 1
            outcomes[f"V{version} {outcome}"] += 1
            if outcome == "other" and outcomes["other"] <= 5:
                outcomes[("other", detail)] += 1
                if verbose:
                    print(f"case {number}: {detail}")
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    outcomes = run(args.cases, args.seed, verbose=True)
    for outcome in ("exact", "format_error", "other"):
        print(f"{outcome}: {outcomes[outcome]} (V1 {outcomes[f'V1 {outcome}']}, V2 {outcomes[f'V2 {outcome}']})")


if __name__ == "__main__":
    main()

