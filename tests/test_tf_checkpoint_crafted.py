"""The TF checkpoint readers against crafted, malformed files (every checksum valid): each must
give a FormatError naming the file (and tensor), never another exception, a hang, an allocation
beyond the bytes present, or zeros where data was missing."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from rnnkit.interop import _wire
from rnnkit.interop.tf_checkpoint import FormatError, TFCheckpoint, list_variables, load_variables, open_checkpoint

from .tf_bundle import (
    Bundle,
    Raw,
    bundle_parts,
    encode,
    entry_tree,
    header_tree,
    raw_block,
    shape_tree,
    slice_key,
    slice_tree,
    tensor_tree,
    v1_parts,
    varint,
    write_bundle,
    write_parts,
    write_table,
    write_v1,
    write_v1_parts,
)

RNG = np.random.default_rng(7)
W = RNG.standard_normal((6, 4)).astype(np.float32)
B = RNG.standard_normal(4).astype(np.float32)


def _set(tree: list, number: int, value) -> list:
    """``tree`` with every ``number`` field replaced by one holding ``value``."""
    kept = [(n, v) for n, v in tree if n != number]
    return kept + [(number, value)]


def _entry(bundle, key: bytes) -> list:
    return next(tree for k, tree in bundle.entries if k == key)


def _replace(bundle, key: bytes, tree: list) -> None:
    bundle.entries = [(k, tree if k == key else t) for k, t in bundle.entries]


def _partitioned(tmp_path: Path, parts: int = 3):
    return bundle_parts({"w": W, "b": B}, partitioned={"w": parts})


def _slice_keys(bundle) -> list[bytes]:
    return [k for k, _ in bundle.entries if k.startswith(b"\x00")]


# ---------------------------------------------------------------------------------------------
# 1. only FormatError, for numbers out of range


@pytest.mark.parametrize("dim", [-1, 1 << 63, (1 << 64) - 1, Raw(0, b"\xff" * 9 + b"\x7f"), Raw(0, b"\xff" * 11)])
def test_a_bad_dimension_is_a_format_error(tmp_path, dim) -> None:
    bundle = bundle_parts({"w": W})
    _replace(bundle, b"w", _set(_entry(bundle, b"w"), 2, [(2, [(1, dim)]), (2, [(1, 4)])]))
    write_parts(tmp_path / "m", bundle)
    with pytest.raises(FormatError, match=r"m\.index: w: .*(negative dimension|varint)"):
        load_variables(tmp_path / "m")


def _manual(prefix: Path, shape: tuple[int, ...], pieces: list[tuple[list, np.ndarray]]) -> None:
    """A float32 variable ``w`` of ``shape`` stored as the given (extent, values) slices."""
    entries, data = [(b"", header_tree(1))], b""
    for extent, values in pieces:
        raw = values.astype("<f4").tobytes()
        entries.append((slice_key("w", extent), entry_tree(1, values.shape, 0, len(data), raw)))
        data += raw
    entries.append((b"w", entry_tree(1, shape, 0, 0, None, [extent for extent, _ in pieces])))
    write_parts(prefix, Bundle(entries, [data], ["data-00000-of-00001"]))


def test_a_huge_partitioned_shape_with_tiny_slices_is_refused_before_allocating(tmp_path) -> None:
    _manual(tmp_path / "m", (1 << 20, 1 << 20), [([(0, 3), (0, 4)], W[:3]), ([(3, 3), (0, 4)], W[3:])])
    with pytest.raises(FormatError, match=r"m\.index: w: the slices hold 24 elements, the shape \[1048576, 1048576\]"):
        load_variables(tmp_path / "m")


def test_a_shape_numpy_refuses_even_when_empty_is_a_format_error(tmp_path) -> None:
    bundle = bundle_parts({"w": np.zeros((0, 4), np.float32)})
    _replace(bundle, b"w", _set(_entry(bundle, b"w"), 2, shape_tree((0, 1 << 40, 1 << 40))))
    write_parts(tmp_path / "m", bundle)
    with pytest.raises(FormatError, match="too large for any array"):
        load_variables(tmp_path / "m")


@pytest.mark.parametrize("extents, message", [
    ([(0, 3), (0, 4), (0, 1)], "a slice with 3 dimensions of a tensor of shape"),
    ([(-1, 3), (0, 4)], "outside a dimension"),
    ([(0, -3), (0, 4)], "outside a dimension"),
    ([(4, 3), (0, 4)], "outside a dimension"),
    ([(2, None), (0, 4)], "whole-dimension slice extent starting at 2"),
])
def test_v2_slices_that_do_not_fit_the_shape(tmp_path, extents, message) -> None:
    bundle = bundle_parts({"w": W}, partitioned={"w": 2})
    first = _slice_keys(bundle)[0]
    tree = _entry(bundle, first)
    bundle.entries = [(slice_key("w", extents) if k == first else k, t) for k, t in bundle.entries]
    full = _set(_entry(bundle, b"w"), 7, slice_tree(extents))
    full.append((7, slice_tree([(3, 3), (0, None)])))
    _replace(bundle, b"w", full)
    assert tree
    write_parts(tmp_path / "m", bundle)
    with pytest.raises(FormatError, match=rf"m\.index: w: .*{message}"):
        load_variables(tmp_path / "m")


def _v1_with(tmp_path: Path, tensors: dict, change=None, parts=None) -> Path:
    files = v1_parts(tensors, parts)
    if change is not None:
        change(files)
    write_v1_parts(tmp_path / "v1", files)
    return tmp_path / "v1"


def _set_values(field: int, payload: bytes):
    """A change to the first slice's TensorProto: its values in ``field`` (packed)."""

    def change(files) -> None:
        key, tree = files.slices[0][0]
        saved = dict(tree)[2]
        proto = [(n, v) for n, v in dict(saved)[3] if n not in range(4, 19)] + [(field, payload)]
        files.slices[0][0] = (key, [(2, _set(saved, 3, proto))])

    return change


@pytest.mark.parametrize("dtype, field, value", [
    (np.int8, 7, 1000), (np.int8, 7, -129), (np.uint8, 7, -1), (np.uint8, 7, 256), (np.int16, 7, 1 << 15),
    (np.uint16, 7, -1), (np.int32, 7, 1 << 31), (np.uint32, 16, 1 << 32), (np.bool_, 11, 2),
    (np.float16, 13, 70000), (np.float16, 13, -1),
])
def test_v1_typed_values_out_of_the_dtypes_range(tmp_path, dtype, field, value) -> None:
    prefix = _v1_with(tmp_path, {"x": np.zeros(1, dtype)}, _set_values(field, varint(value)))
    with pytest.raises(FormatError, match=r"v1: x: .*out of range"):
        load_variables(prefix)


def test_v1_uint64_and_extreme_values_read_back_exactly(tmp_path) -> None:
    tensors = {
        "u64": np.array([0, 1 << 63, (1 << 64) - 1], np.uint64), "u32": np.array([0, (1 << 32) - 1], np.uint32),
        "i8": np.array([-128, 127], np.int8), "u16": np.array([0, 65535], np.uint16),
        "i64": np.array([-(1 << 63), (1 << 63) - 1], np.int64), "h": np.array([-65504, 65504], np.float16),
    }
    arrays = load_variables(_v1_with(tmp_path, tensors))
    for name, value in tensors.items():
        assert arrays[name].dtype == value.dtype and np.array_equal(arrays[name], value), name


def test_v1_values_in_the_wrong_field_or_packed_badly(tmp_path) -> None:
    prefix = _v1_with(tmp_path, {"x": np.zeros(1, np.float32)}, _set_values(5, b"\x00" * 5))
    with pytest.raises(FormatError, match="packed field 5 of 5 bytes, not a multiple of 4"):
        load_variables(prefix)
    prefix = _v1_with(tmp_path, {"x": np.zeros(1, np.uint64)}, _set_values(10, varint(1)))
    with pytest.raises(FormatError, match="values in TensorProto field 10; DataType 23 keeps them in field 17"):
        load_variables(prefix)


def test_v1_shape_of_2_to_the_40_without_data_is_refused(tmp_path) -> None:
    def change(files) -> None:
        tensor = files.metas[0][0][1][0][1]
        tensor[:] = _set(tensor, 2, shape_tree((1 << 40,)))

    prefix = _v1_with(tmp_path, {"x": np.zeros(3, np.float32)}, change)
    with pytest.raises(FormatError, match=r"v1: x: .*outside a dimension|v1: x: .*holds 3 values"):
        load_variables(prefix)


@pytest.mark.parametrize("where", ["meta", "slice"])
def test_v1_names_that_are_not_utf8(tmp_path, where) -> None:
    def change(files) -> None:
        if where == "meta":
            tensor = files.metas[0][0][1][0][1]
            tensor[:] = _set(tensor, 1, b"x\xff")
        else:
            key, tree = files.slices[0][0]
            files.slices[0][0] = (key, [(2, _set(dict(tree)[2], 1, b"x\xff"))])

    with pytest.raises(FormatError, match=r"v1: .*not UTF-8: b'x\\xff'"):
        open_checkpoint(_v1_with(tmp_path, {"x": np.zeros(2, np.float32)}, change))


def test_v2_names_that_are_not_utf8(tmp_path) -> None:
    bundle = bundle_parts({"w": W, "b": B}, partitioned={"w": 2})
    bundle.entries = [(b"w\xff" if k == b"w" else k, t) for k, t in bundle.entries]
    write_parts(tmp_path / "m", bundle)
    with pytest.raises(FormatError, match=r"m\.index: a tensor name is not UTF-8"):
        load_variables(tmp_path / "m")
    bundle = bundle_parts({"w": W}, partitioned={"w": 2})
    bundle.entries = [(k.replace(b"w", b"\xc3", 1) if k.startswith(b"\x00") else k, t) for k, t in bundle.entries]
    write_parts(tmp_path / "s", bundle)
    with pytest.raises(FormatError, match=r"s\.index: a partitioned variable's name is not UTF-8"):
        load_variables(tmp_path / "s")


def test_checkpoint_state_files_latin1_huge_or_without_a_path(tmp_path) -> None:
    write_bundle(tmp_path / "ckpt", {"w": W})
    state = tmp_path / "checkpoint"
    state.write_bytes(b'model_checkpoint_path: "mod\xe8le/ckpt"\n')
    with pytest.raises(FormatError, match=r"checkpoint: model_checkpoint_path is not UTF-8"):
        load_variables(tmp_path)
    state.write_bytes(b'model_checkpoint_path: "ckpt\\q"\n')
    with pytest.raises(FormatError, match=r"unknown escape"):
        load_variables(tmp_path)
    state.write_bytes(b'model_checkpoint_path: "' + b"x" * 5000 + b'"\n')  # a name the OS refuses
    with pytest.raises(FormatError, match="no checkpoint there"):
        load_variables(tmp_path)
    with state.open("wb") as file:  # 4 GiB, sparse: read whole it would be a MemoryError
        file.write(b'model_checkpoint_path: "ckpt"\n')
        file.truncate(4 << 30)
    with pytest.raises(FormatError, match=r"checkpoint: larger than 1048576 bytes"):
        load_variables(tmp_path)
    state.write_bytes(b'model_checkpoint_path: "ckpt\\000"\n')
    with pytest.raises(FormatError, match="not a usable path"):
        load_variables(tmp_path)
    state.write_bytes(b'all_model_checkpoint_paths: "ckpt"\n')
    with pytest.raises(FormatError, match="no model_checkpoint_path"):
        load_variables(tmp_path)
    state.write_bytes(b'model_checkpoint_path: "c\\153p\\x74"\n')  # octal and hex escapes
    assert np.array_equal(load_variables(tmp_path)["w"], W)


# ---------------------------------------------------------------------------------------------
# 2. never a silent wrong result


def test_v1_partitioned_over_shard_files_reads_back_and_a_missing_shard_is_an_error(tmp_path) -> None:
    paths = write_v1(tmp_path / "s", {"w": W, "b": B}, parts={"w": 3}, shards=3)
    assert [p.name for p in paths] == ["s-00000-of-00003", "s-00001-of-00003", "s-00002-of-00003"]
    arrays = load_variables(tmp_path / "s")
    assert np.array_equal(arrays["w"], W) and np.array_equal(arrays["b"], B)
    paths[1].unlink()
    with pytest.raises(FormatError, match=r"s: missing V1 shard file s-00001-of-00003"):
        load_variables(tmp_path / "s")
    paths[1].write_bytes(b"")
    paths[2].unlink()
    with pytest.raises(FormatError, match=r"missing V1 shard file s-00002-of-00003"):
        load_variables(tmp_path / "s")


def test_v1_files_of_two_saves_under_one_prefix_are_an_error(tmp_path) -> None:
    write_v1(tmp_path / "s", {"w": W}, parts={"w": 2}, shards=2)
    write_v1(tmp_path / "s", {"w": W}, parts={"w": 3}, shards=3)
    with pytest.raises(FormatError, match=r"s: V1 shard files of different saves side by side \(-of-00002, -of-00003\)"):
        load_variables(tmp_path / "s")


def test_v1_a_listed_slice_without_data_is_an_error(tmp_path) -> None:
    def drop(files) -> None:
        files.slices[0] = [s for s in files.slices[0] if not s[0].startswith(b"w")][:1] + [
            s for s in files.slices[0] if s[0].startswith(b"w")][1:]

    prefix = _v1_with(tmp_path, {"w": W}, drop, parts={"w": 3})
    with pytest.raises(FormatError, match=r"v1: w: no data for the listed slice \[\[0, 2\], \[0, 4\]\]"):
        load_variables(prefix)

    def drop_all(files) -> None:
        files.slices[0] = []

    with pytest.raises(FormatError, match=r"v1: w: no data for the listed slice"):
        load_variables(_v1_with(tmp_path, {"w": W}, drop_all))


def test_v1_slices_that_leave_a_gap_or_overlap(tmp_path) -> None:
    def shift(start: int):
        def change(files) -> None:
            extent = slice_tree([(start, 2), (0, None)])
            tensor = files.metas[0][0][1][0][1]
            tensor[:] = [(n, v) for n, v in tensor if n != 4] + [(4, slice_tree([(0, 2), (0, None)])), (4, extent),
                                                                 (4, slice_tree([(4, 2), (0, None)]))]
            key, tree = files.slices[0][1]
            files.slices[0][1] = (key, [(2, _set(dict(tree)[2], 2, extent))])
        return change

    for start, message in ((1, "overlapping slices"), (3, "overlapping slices")):
        with pytest.raises(FormatError, match=rf"v1: w: {message}"):
            load_variables(_v1_with(tmp_path, {"w": W}, shift(start), parts={"w": 3}))

    def listed_twice(files) -> None:
        meta = files.metas[0][0][1]
        meta.append(meta[0])

    with pytest.raises(FormatError, match=r"v1: w: listed twice in the metadata"):
        open_checkpoint(_v1_with(tmp_path, {"w": W}, listed_twice))

    def slice_twice(files) -> None:
        key, tree = files.slices[0][0]
        files.slices[0].append((key + b"\x09", tree))
        tensor = files.metas[0][0][1][0][1]
        tensor.append(tensor[-1])

    with pytest.raises(FormatError, match=r"v1: w: .*v1: two slices with the extent"):
        load_variables(_v1_with(tmp_path, {"w": W}, slice_twice))


def test_v2_slices_that_leave_a_gap_or_overlap(tmp_path) -> None:
    _manual(tmp_path / "g", (6, 4), [([(0, 2), (0, 4)], W[:2]), ([(3, 3), (0, None)], W[3:])])
    with pytest.raises(FormatError, match=r"g\.index: w: the slices hold 20 elements, the shape \[6, 4\] has 24"):
        load_variables(tmp_path / "g")
    _manual(tmp_path / "o", (6, 4), [([(0, 3), (0, 4)], W[:3]), ([(2, 3), (0, 4)], W[2:5])])  # row 5 missing
    with pytest.raises(FormatError, match=r"o\.index: w: overlapping slices"):
        load_variables(tmp_path / "o")
    _manual(tmp_path / "t", (6, 4), [([(0, 6), (0, 1)], W[:, :1]), ([(0, 3), (1, 3)], W[:3, 1:]),
                                     ([(3, 3), (1, 3)], W[3:, 1:])])  # not a grid: still exact
    assert np.array_equal(load_variables(tmp_path / "t")["w"], W)


def test_v2_the_same_slice_twice_under_two_encodings_of_its_key(tmp_path) -> None:
    bundle = bundle_parts({"w": W}, partitioned={"w": 2})
    first = _slice_keys(bundle)[0]
    assert first.endswith(b"\x80\x83\x80\x7f")  # (0, 3), (0, whole)
    overlong = first[:-4] + b"\xc0\x00\x83\x80\x7f"  # start 0 as a 2-byte OrderedCode number
    bundle.entries.append((overlong, _entry(bundle, first)))
    write_parts(tmp_path / "m", bundle)
    with pytest.raises(FormatError, match=r"m\.index: w: two stored slices with the extent \[\[0, 3\], \[0, 4\]\]"):
        load_variables(tmp_path / "m")


def test_v2_slice_entries_must_match_the_listed_slices(tmp_path) -> None:
    bundle = bundle_parts({"w": W}, partitioned={"w": 2})
    bundle.entries = [(k, t) for k, t in bundle.entries if k != _slice_keys(bundle)[1]]
    write_parts(tmp_path / "m", bundle)
    with pytest.raises(FormatError, match=r"m\.index: w: no data for the listed slice \[\[3, 3\], \[0, 4\]\]"):
        load_variables(tmp_path / "m")
    bundle = bundle_parts({"w": W, "b": B}, partitioned={"w": 2})
    bundle.entries = [(k, t) for k, t in bundle.entries if k != b"w"]
    write_parts(tmp_path / "o", bundle)
    with pytest.raises(FormatError, match=r"o\.index: w: slices stored for a tensor the checkpoint does not list"):
        TFCheckpoint(tmp_path / "o")


def test_v2_slices_sharing_bytes_are_refused(tmp_path) -> None:
    bundle = bundle_parts({"w": np.zeros((6, 4), np.float32)}, partitioned={"w": 2})
    second = _slice_keys(bundle)[1]
    _replace(bundle, second, [(n, v) for n, v in _entry(bundle, second) if n != 4])  # offset 0, as the first
    write_parts(tmp_path / "m", bundle)
    with pytest.raises(FormatError, match=r"m\.index: w: slices share bytes in shard 0"):
        load_variables(tmp_path / "m")


def test_v2_an_entry_without_a_crc_is_data_loss_under_verify(tmp_path) -> None:
    bundle = bundle_parts({"w": W})
    _replace(bundle, b"w", [(n, v) for n, v in _entry(bundle, b"w") if n != 6])
    write_parts(tmp_path / "m", bundle)
    with pytest.raises(FormatError, match=r"m\.index: w: no crc32c in its entry \(data loss\)"):
        load_variables(tmp_path / "m")
    assert np.array_equal(load_variables(tmp_path / "m", verify=False)["w"], W)


def test_duplicate_and_unordered_keys_are_refused(tmp_path) -> None:
    bundle = bundle_parts({"w": W, "b": B})
    bundle.entries.append((b"w", _entry(bundle, b"w")))
    write_parts(tmp_path / "d", bundle)
    with pytest.raises(FormatError, match=r"d\.index: (table|index) keys out of order or repeated: b'w' after b'w'"):
        TFCheckpoint(tmp_path / "d")
    bundle = bundle_parts({"w": W, "b": B})
    bundle.entries = [bundle.entries[0], bundle.entries[2], bundle.entries[1]]
    write_parts(tmp_path / "u", bundle, sort=False, per_block=10)
    with pytest.raises(FormatError, match=r"u\.index: (table keys out of order or repeated: b'b' after b'w'|key b'w' beyond its block's index key b'b')"):
        TFCheckpoint(tmp_path / "u")


# ---------------------------------------------------------------------------------------------
# 3. the table: linear work, no block read twice


def _header_and(entries: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(b"", encode([(1, 1)]))] + entries


def test_an_index_repeating_one_data_blocks_handle_is_refused(tmp_path) -> None:
    count = 2000
    entries = _header_and([(b"t%05d" % i, encode([(1, 1)])) for i in range(count - 1)])

    def repeat(handles):
        (_, offset, size), = handles
        return [(b"t%05d" % i, offset, size) for i in range(count)]

    write_table(tmp_path / "r.index", entries, per_block=count, mangle_index=repeat)
    with pytest.raises(FormatError, match=r"r\.index: the table's blocks at offsets 0 and 0 overlap \(or repeat\)"):
        TFCheckpoint(tmp_path / "r")


def test_overlapping_blocks_and_keys_beyond_their_separator_are_refused(tmp_path) -> None:
    entries = _header_and([(b"t%d" % i, encode([(1, 1)])) for i in range(8)])

    def overlap(handles):
        return [(key, offset + 1 if i == 1 else offset, size) for i, (key, offset, size) in enumerate(handles)]

    write_table(tmp_path / "o.index", entries, mangle_index=overlap)
    with pytest.raises(FormatError, match=r"o\.index: .*overlap|o\.index: checksum mismatch"):
        TFCheckpoint(tmp_path / "o")

    def early_separator(handles):
        return [(b"t0" if i == 1 else key, offset, size) for i, (key, offset, size) in enumerate(handles)]

    write_table(tmp_path / "s.index", entries, mangle_index=early_separator)
    with pytest.raises(FormatError, match=r"s\.index: index keys out of order"):
        TFCheckpoint(tmp_path / "s")


def test_keys_expanding_far_beyond_the_file_are_refused(tmp_path) -> None:
    # each 4-byte entry extends the previous key by one byte: n entries rebuild n^2/2 key bytes
    count = 3000
    block = raw_block([(0, 1, b"k", b"")] + [(i + 1, 1, b"k", b"") for i in range(count)])
    key = b"k" * (count + 1)
    write_table(tmp_path / "k.index", [], raw_blocks=[block], mangle_index=lambda _: [(key, 0, len(block))])
    with pytest.raises(FormatError, match=r"k\.index: .*expand to far more bytes than the file holds"):
        TFCheckpoint(tmp_path / "k")


# ---------------------------------------------------------------------------------------------
# 4. returned arrays own their memory


@pytest.mark.parametrize("layout", ["plain", "partitioned", "big_endian"])
def test_arrays_stay_valid_after_the_shard_is_truncated_or_rewritten(tmp_path, layout) -> None:
    tensors = {"w": W, "i": np.arange(5, dtype=np.int64)}
    write_bundle(tmp_path / "m", tensors, partitioned={"w": 2} if layout == "partitioned" else None,
                 big_endian=layout == "big_endian", bfloat16={"bf": np.array([1.5, -2.0], np.float32)})
    arrays = load_variables(tmp_path / "m")
    shard = tmp_path / "m.data-00000-of-00001"
    size = shard.stat().st_size
    shard.write_bytes(b"")
    for name, value in tensors.items():
        assert np.array_equal(arrays[name], value), name
    shard.write_bytes(b"\x55" * size)
    for name, value in tensors.items():
        assert np.array_equal(arrays[name], value), name
        assert arrays[name].flags.writeable and not isinstance(arrays[name].base, np.memmap), name
    assert np.array_equal(arrays["bf"], [1.5, -2.0])
    arrays["w"][0, 0] = 0.0  # writable: torch.from_numpy takes it without a warning


# ---------------------------------------------------------------------------------------------
# 5. CRC32C


def test_crc32c_known_vectors_and_the_fallback_agrees_with_the_fast_path() -> None:
    known = {b"": 0, b"123456789": 0xE3069283, bytes(32): 0x8A9136AA, b"\xff" * 32: 0x62A8AB43,
             bytes(range(32)): 0x46DD794E, bytes(range(31, -1, -1)): 0x113FDB5C}
    for data, crc in known.items():
        assert _wire.crc32c(data) == crc and _wire.crc32c_fallback(data) == crc, data
    rng = np.random.default_rng(3)
    for length in (1, 63, 64, 65, 4095, 4096, 4097, 100_003):
        data = rng.integers(0, 256, length, dtype=np.uint8)
        fast = _wire.crc32c(data.tobytes())
        assert _wire.crc32c_fallback(data.tobytes()) == fast, length
        assert _wire.crc32c_of_array(data, chunk=4096) == fast, length


def test_the_fallback_is_used_without_google_crc32c(tmp_path, monkeypatch) -> None:
    write_bundle(tmp_path / "m", {"w": W}, partitioned={"w": 2})
    monkeypatch.setattr(_wire, "_fast_crc32c", None)
    assert np.array_equal(load_variables(tmp_path / "m")["w"], W)


# ---------------------------------------------------------------------------------------------
# 6. layout, and formats that must keep working


def test_the_readers_share_one_format_module_and_not_each_others_privates() -> None:
    folder = Path(_wire.__file__).parent
    for module, other in (("tf_checkpoint", "tf_checkpoint_v1"), ("tf_checkpoint_v1", "tf_checkpoint")):
        tree = ast.parse((folder / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == other:
                assert all(not alias.name.startswith("_") for alias in node.names), module
                assert module == "tf_checkpoint", f"{module} imports {other}"


def test_big_endian_bundles_read_back_exactly(tmp_path) -> None:
    tensors = {"w": W, "d": RNG.standard_normal(3), "i": np.arange(4, dtype=np.int32), "h": np.ones(2, np.float16)}
    values = np.array([1.0, -2.5], np.float32)
    write_bundle(tmp_path / "be", tensors, partitioned={"w": 3}, big_endian=True, bfloat16={"bf": values})
    arrays = load_variables(tmp_path / "be")
    for name, value in tensors.items():
        assert arrays[name].dtype == value.dtype and np.array_equal(arrays[name], value), name
    assert np.array_equal(arrays["bf"], values)


def test_partitions_along_a_later_axis_and_listing(tmp_path) -> None:
    from .tf_bundle import write_parts as write

    write(tmp_path / "a", bundle_parts({"w": W}, partitioned={"w": 3}, partition_axis=1))
    assert np.array_equal(load_variables(tmp_path / "a")["w"], W)
    assert list_variables(tmp_path / "a") == [("w", [6, 4])]


def test_a_v1_slice_proto_with_tensor_content(tmp_path) -> None:
    def content(files) -> None:
        key, tree = files.slices[0][0]
        proto = [(n, v) for n, v in tensor_tree(W) if n != 5] + [(4, W.astype("<f4").tobytes())]
        files.slices[0][0] = (key, [(2, _set(dict(tree)[2], 3, proto))])

    assert np.array_equal(load_variables(_v1_with(tmp_path, {"w": W}, content))["w"], W)
