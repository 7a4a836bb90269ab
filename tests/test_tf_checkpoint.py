"""The TF checkpoint reader, against bundles written by an independent minimal writer
(tests/tf_bundle.py), and load_tf_checkpoint against TensorFlow's golden cases."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch

import rnnkit as rk
from rnnkit.interop.tf_checkpoint import FormatError, TFCheckpoint, list_variables, load_variables

from .golden import cell_from_spec, golden_cases
from .tf_bundle import write_bundle

RNG = np.random.default_rng(0)
TENSORS = {
    "rnn/basic_lstm_cell/kernel": RNG.standard_normal((7, 12)).astype(np.float32),
    "rnn/basic_lstm_cell/bias": RNG.standard_normal(12).astype(np.float32),
    "double": RNG.standard_normal((3, 2)),
    "half": RNG.standard_normal(5).astype(np.float16),
    "count": np.array(7, dtype=np.int64),
    "flags": np.array([True, False, True]),
    "ints": np.arange(6, dtype=np.int32).reshape(2, 3),
    "big": RNG.standard_normal((40, 30)).astype(np.float32),
}


def _check_all(path, expected=TENSORS) -> None:
    arrays = load_variables(path)
    for name, value in expected.items():
        assert arrays[name].dtype == value.dtype and arrays[name].shape == value.shape, name
        assert np.array_equal(arrays[name], value), name


@pytest.mark.parametrize("shards", [1, 3])
def test_every_dtype_shape_and_shard_reads_back_exactly(tmp_path, shards) -> None:
    write_bundle(tmp_path / "model.ckpt", TENSORS, shards=shards)
    _check_all(tmp_path / "model.ckpt")
    _check_all(tmp_path / "model.ckpt.index")
    assert list_variables(tmp_path / "model.ckpt") == sorted((n, list(v.shape)) for n, v in TENSORS.items())


def test_partitioned_variables_are_reassembled(tmp_path) -> None:
    write_bundle(tmp_path / "p", TENSORS, partitioned={"big": 3, "rnn/basic_lstm_cell/kernel": 2})
    _check_all(tmp_path / "p")
    assert "big" in TFCheckpoint(tmp_path / "p").names()


def test_bfloat16_is_widened_and_strings_are_skipped(tmp_path) -> None:
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)  # exact in bfloat16
    write_bundle(tmp_path / "b", {"x": np.ones(2, np.float32)}, bfloat16={"bf": values}, strings={"s": [b"ab", b"c"]})
    with pytest.warns(UserWarning, match="string tensors not loaded: s"):
        arrays = load_variables(tmp_path / "b")
    assert np.array_equal(arrays["bf"], values) and "s" not in arrays
    with pytest.raises(FormatError, match="string tensor"):
        TFCheckpoint(tmp_path / "b").read("s")


def test_a_directory_reads_its_checkpoint_state_file(tmp_path) -> None:
    write_bundle(tmp_path / "model.ckpt-7", TENSORS)
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt-7"\nall_model_checkpoint_paths: "model.ckpt-7"\n'
    )
    _check_all(tmp_path)


def _corrupt(path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x5A
    path.write_bytes(bytes(data))


def test_bad_files_give_clear_errors(tmp_path) -> None:
    write_bundle(tmp_path / "m", TENSORS)
    index, data = tmp_path / "m.index", tmp_path / "m.data-00000-of-00001"
    original_index, original_data = index.read_bytes(), data.read_bytes()

    _corrupt(data, 10)
    with pytest.raises(FormatError, match=r"m\.index: [^:]+: .*m\.data-00000-of-00001: checksum mismatch"):
        load_variables(tmp_path / "m")
    assert load_variables(tmp_path / "m", verify=False)  # the check can be switched off
    data.write_bytes(original_data[:-8])
    with pytest.raises(FormatError, match="outside shard 0"):
        load_variables(tmp_path / "m")
    data.unlink()
    with pytest.raises(FormatError, match="missing shard file"):
        load_variables(tmp_path / "m")
    data.write_bytes(original_data)

    index.write_bytes(original_index[:-1])
    with pytest.raises(FormatError, match="bad magic|too short"):
        TFCheckpoint(tmp_path / "m")
    index.write_bytes(original_index[:20])
    with pytest.raises(FormatError, match="too short"):
        TFCheckpoint(tmp_path / "m")
    index.write_bytes(original_index)
    _corrupt(index, 5)
    with pytest.raises(FormatError, match="checksum mismatch in the block"):
        TFCheckpoint(tmp_path / "m")
    with pytest.raises(FormatError, match="no such checkpoint index"):
        TFCheckpoint(tmp_path / "nothing")


def test_an_unknown_dtype_is_named(tmp_path) -> None:
    from .tf_bundle import entry_proto, field_bytes, field_varint, write_table

    data = np.ones(2, np.float32).tobytes()
    write_table(tmp_path / "u.index", [
        (b"", field_varint(1, 1) + field_bytes(3, field_varint(1, 1))),
        (b"weird", entry_proto(99, (2,), 0, 0, data)),
    ])
    (tmp_path / "u.data-00000-of-00001").write_bytes(data)
    with pytest.raises(FormatError, match=r"u\.index: weird: an unsupported dtype \(DataType 99\)"):
        load_variables(tmp_path / "u")


def test_fuzzed_files_give_the_right_tensors_or_a_clean_error(tmp_path) -> None:
    write_bundle(tmp_path / "f", TENSORS, shards=2, partitioned={"big": 2})
    files = [tmp_path / "f.index", tmp_path / "f.data-00000-of-00002", tmp_path / "f.data-00001-of-00002"]
    originals = {f: f.read_bytes() for f in files}
    chooser = random.Random(1234)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(150):
        target = chooser.choice(files)
        data = bytearray(originals[target])
        if chooser.random() < 0.2:
            data = data[: chooser.randrange(len(data))]
        else:
            for _ in range(chooser.randint(1, 3)):
                data[chooser.randrange(len(data))] = chooser.randrange(256)
        target.write_bytes(bytes(data))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arrays = load_variables(tmp_path / "f")
        except FormatError:
            outcomes["error"] += 1
        else:
            outcomes["ok"] += 1  # a flip that changed nothing read (or the same value): must be exact
            for name, value in TENSORS.items():
                assert np.array_equal(arrays[name], value), name
        target.write_bytes(originals[target])
    assert outcomes["error"] > 100


def test_structurally_fuzzed_files_give_the_right_tensors_or_a_clean_error() -> None:
    """Mutations that keep every checksum valid (tests/fuzz_checkpoint.py; run it long with
    ``python -m tests.fuzz_checkpoint --cases 5000``): V1 and V2, seeded."""
    from .fuzz_checkpoint import run

    outcomes = run(150, seed=5)
    failures = [key[1] for key in outcomes if isinstance(key, tuple)]
    assert outcomes["other"] == 0, failures
    assert outcomes["exact"] > 10 and outcomes["format_error"] > 100


CASES = [c for c in golden_cases() if c.spec["runner"] == "dynamic_rnn"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_load_tf_checkpoint_reproduces_tensorflow(tmp_path, case) -> None:
    scope = f"{case.spec.get('scope', 'case')}/rnn"
    variables = case.prefixed("var/")
    saved = dict(variables)
    for name, value in variables.items():  # what a TF1 Saver writes beside the weights
        saved[f"{name}/Adam"] = np.zeros_like(value)
        saved[f"{name}/Adam_1"] = np.zeros_like(value)
    saved["global_step"] = np.array(100, dtype=np.int64)
    saved[f"{scope}/beta1_power"] = np.array(0.9)
    write_bundle(tmp_path / "model.ckpt", saved)
    cell = cell_from_spec(case.spec["cell"])
    assert rk.load_tf_checkpoint(cell, tmp_path / "model.ckpt", scope=scope) == rk.LoadResult([], [], [])
    inputs = torch.from_numpy(case.arrays["inputs"])
    lengths = case.arrays.get("sequence_length")
    initial = case.leaves("initial_state")
    state = rk.pack_state(cell.state_size, [torch.from_numpy(a) for a in initial]) if initial else None
    out, _ = rk.dynamic_rnn(
        cell, inputs, sequence_length=None if lengths is None else torch.from_numpy(lengths),
        initial_state=state, time_major=case.spec.get("time_major", False),
    )
    torch.testing.assert_close(out, torch.from_numpy(case.arrays["outputs"]), rtol=1e-10, atol=1e-10)


def test_legacy_weights_and_biases_names(tmp_path) -> None:
    kernel, bias = TENSORS["rnn/basic_lstm_cell/kernel"], TENSORS["rnn/basic_lstm_cell/bias"]
    write_bundle(tmp_path / "old", {"rnn/basic_lstm_cell/weights": kernel, "rnn/basic_lstm_cell/biases": bias})
    cell = rk.BasicLSTMCell(3)
    rk.load_tf_checkpoint(cell, tmp_path / "old")
    assert np.array_equal(cell.kernel.detach().numpy(), kernel) and cell.input_size == 4
    with pytest.raises(ValueError, match="missing"):
        rk.load_tf_checkpoint(rk.GRUCell(3), tmp_path / "old")


def test_convert_command(tmp_path, capsys) -> None:
    from safetensors.torch import load_file

    from rnnkit.__main__ import main as cli

    saved = dict(TENSORS)
    saved["rnn/basic_lstm_cell/kernel/Adam"] = np.zeros((7, 12), np.float32)
    write_bundle(tmp_path / "c", saved)
    assert cli(["convert", str(tmp_path / "c"), "--list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert "rnn/basic_lstm_cell/kernel\t[7, 12]" in listing and len(listing) == len(saved)
    assert cli(["convert", str(tmp_path / "c"), str(tmp_path / "w.pt"), "--scope", "rnn"]) == 0
    weights = torch.load(tmp_path / "w.pt")
    assert sorted(weights) == ["rnn/basic_lstm_cell/bias", "rnn/basic_lstm_cell/kernel"]  # no optimizer slot
    cell = rk.BasicLSTMCell(3)
    rk.load_tf_variables(cell, weights)
    assert torch.equal(cell.kernel.detach(), torch.from_numpy(TENSORS["rnn/basic_lstm_cell/kernel"]))
    assert cli(["convert", str(tmp_path / "c"), str(tmp_path / "w.safetensors")]) == 0
    assert torch.equal(load_file(tmp_path / "w.safetensors")["big"], torch.from_numpy(TENSORS["big"]))
    capsys.readouterr()
    assert cli(["convert", str(tmp_path / "missing"), str(tmp_path / "x.pt")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def _tf0_name(name: str) -> str:
    """A current TF variable name as TF 0.x wrote it."""
    import re

    name = re.sub(r"/multi_rnn_cell/cell_(\d+)/", r"/MultiRNNCell/Cell\1/", name)
    for new, old in (("basic_lstm_cell/kernel", "BasicLSTMCell/Linear/Matrix"),
                     ("basic_lstm_cell/bias", "BasicLSTMCell/Linear/Bias"),
                     ("gru_cell/gates/kernel", "GRUCell/Gates/Linear/Matrix"),
                     ("gru_cell/gates/bias", "GRUCell/Gates/Linear/Bias"),
                     ("gru_cell/candidate/kernel", "GRUCell/Candidate/Linear/Matrix"),
                     ("gru_cell/candidate/bias", "GRUCell/Candidate/Linear/Bias"),
                     ("lstm_cell/bias", "LSTMCell/B"), ("lstm_cell/w_f_diag", "LSTMCell/W_F_diag"),
                     ("lstm_cell/w_i_diag", "LSTMCell/W_I_diag"), ("lstm_cell/w_o_diag", "LSTMCell/W_O_diag")):
        name = name.replace(new, old)
    return name


def test_tf0_names_and_sharded_old_lstm_kernels_load(tmp_path) -> None:
    case = next(c for c in golden_cases() if c.name == "multi_lstm_gru_peephole_seqlen")
    saved = {}
    for name, value in case.prefixed("var/").items():
        if name.endswith("lstm_cell/kernel") and "basic" not in name:
            scope = name[: -len("/lstm_cell/kernel")]
            saved[_tf0_name(f"{scope}/LSTMCell/W_0")] = value[:4]
            saved[_tf0_name(f"{scope}/LSTMCell/W_1")] = value[4:]
        else:
            saved[_tf0_name(name)] = value
    assert not any("multi_rnn_cell" in n for n in saved)
    write_bundle(tmp_path / "old", saved)
    cell = cell_from_spec(case.spec["cell"])
    rk.load_tf_checkpoint(cell, tmp_path / "old", scope="case/rnn")
    for name, value in rk.tf_variables(cell, "case/rnn").items():
        assert np.array_equal(value.detach().numpy(), case.arrays[f"var/{name}"]), name


def test_cudnn_compatible_lstm_names(tmp_path) -> None:
    kernel, bias = TENSORS["rnn/basic_lstm_cell/kernel"], TENSORS["rnn/basic_lstm_cell/bias"]
    write_bundle(tmp_path / "cudnn", {"rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell/kernel": kernel,
                                      "rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell/bias": bias})
    cell = rk.MultiRNNCell([rk.LSTMCell(3, forget_bias=0.0)])
    rk.load_tf_checkpoint(cell, tmp_path / "cudnn")
    assert np.array_equal(cell.layers[0].bias.detach().numpy(), bias)


def test_v1_checkpoints_read_back_exactly(tmp_path) -> None:
    from .tf_bundle import write_v1

    write_v1(tmp_path / "model-v1", TENSORS, parts={"big": 3})
    _check_all(tmp_path / "model-v1")
    kernel = TENSORS["rnn/basic_lstm_cell/kernel"]
    cell = rk.BasicLSTMCell(3)
    rk.load_tf_checkpoint(cell, tmp_path / "model-v1")
    assert np.array_equal(cell.kernel.detach().numpy(), kernel)


def test_cudnn_compatible_gru_names_load_into_a_reset_after_gru(tmp_path) -> None:
    source = rk.GRUCell(3, reset_after=True, input_size=2)
    arrays = {
        name.replace("/gru_cell/", "/cudnn_compatible_gru_cell/"): p.detach().numpy()
        for name, p in rk.tf_variables(source).items()
    }
    write_bundle(tmp_path / "g", arrays)
    target = rk.GRUCell(3, reset_after=True)
    rk.load_tf_checkpoint(target, tmp_path / "g")
    x = torch.randn(2, 5, 2)
    torch.testing.assert_close(rk.dynamic_rnn(target, x)[0], rk.dynamic_rnn(source, x)[0], rtol=0, atol=0)


def test_checkpoint_state_file_with_escaped_and_absolute_paths(tmp_path) -> None:
    folder = tmp_path / "modèle"
    folder.mkdir()
    write_bundle(folder / "ckpt-1", TENSORS)
    escaped = "".join(f"\\{b:03o}" if b > 127 else chr(b) for b in str(folder / "ckpt-1").encode())
    (tmp_path / "checkpoint").write_text(f'model_checkpoint_path: "{escaped}"\n')
    _check_all(tmp_path)


# ---------------------------------------------------------------------------------------------
# every prefix form TF accepts (issue 13): V2 and V1, through every reading entry point

FORM_TENSORS = {
    "rnn/basic_lstm_cell/kernel": RNG.standard_normal((5, 8)).astype(np.float32),
    "rnn/basic_lstm_cell/bias": RNG.standard_normal(8).astype(np.float32),
    "global_step": np.array(12, dtype=np.int64),
}


def _v2(root, prefix: str) -> None:
    """A V2 checkpoint at the text ``prefix`` (``"a/"``: files ``a/.index``), with a .meta file."""
    (root / f"{prefix}.index").parent.mkdir(parents=True, exist_ok=True)
    write_bundle(f"{root}/{prefix}", FORM_TENSORS)
    (root / f"{prefix}.meta").write_bytes(b"a MetaGraphDef, never read")


def _v1(root, prefix: str, shards: int) -> None:
    from .tf_bundle import write_v1

    (root / prefix).parent.mkdir(parents=True, exist_ok=True)
    write_v1(root / prefix, FORM_TENSORS, parts={"rnn/basic_lstm_cell/kernel": 2}, shards=shards)
    (root / f"{prefix}.meta").write_bytes(b"a MetaGraphDef, never read")


def _state(directory, named: str) -> None:
    (directory / "checkpoint").write_text(f'model_checkpoint_path: "{named}"\nall_model_checkpoint_paths: "{named}"\n')


def _moved(root, prefix: str) -> None:
    """A run directory moved since TF wrote its absolute path into the state file."""
    _v2(root, f"run/{prefix}")
    _state(root / "run", f"/no/longer/here/{prefix}")


FORMS = {  # name: (set up under root, the path handed to the readers, relative to root)
    "v2 prefix": (lambda r: _v2(r, "model.ckpt-3"), "model.ckpt-3"),
    "v2 .index": (lambda r: _v2(r, "model.ckpt-3"), "model.ckpt-3.index"),
    "v2 .data": (lambda r: _v2(r, "model.ckpt-3"), "model.ckpt-3.data-00000-of-00001"),
    "v2 .meta": (lambda r: _v2(r, "model.ckpt-3"), "model.ckpt-3.meta"),
    "trailing slash": (lambda r: _v2(r, "model.weights/"), "model.weights/"),
    "trailing slash dir": (lambda r: _v2(r, "model.weights/"), "model.weights"),
    "trailing slash .index": (lambda r: _v2(r, "model.weights/"), "model.weights/.index"),
    "trailing slash in state": (lambda r: (_v2(r, "results/model.weights/"),
                                           _state(r / "results/model.weights", f"{r}/results/model.weights/")),
                                "results/model.weights"),
    "trailing slash moved": (lambda r: (_v2(r, "results/model.weights/"),
                                        _state(r / "results/model.weights", "/gone/results/model.weights/")),
                             "results/model.weights/"),
    "state relative": (lambda r: (_v2(r, "ckpts/model.ckpt-3"), _state(r / "ckpts", "model.ckpt-3")), "ckpts"),
    "state relative subdir": (lambda r: (_v2(r, "ckpts/sub/model.ckpt-3"), _state(r / "ckpts", "sub/model.ckpt-3")),
                              "ckpts/"),
    "state absolute": (lambda r: (_v2(r, "ckpts/model.ckpt-3"), _state(r / "ckpts", f"{r}/ckpts/model.ckpt-3")),
                       "ckpts"),
    "state moved": (lambda r: _moved(r, "model.ckpt-3"), "run"),
    "dir without state": (lambda r: _v2(r, "ckpts/model.ckpt-3"), "ckpts"),
    "v1 file": (lambda r: _v1(r, "model.ckpt", 1), "model.ckpt"),
    "v1 .meta": (lambda r: _v1(r, "model.ckpt", 1), "model.ckpt.meta"),
    "v1 shards prefix": (lambda r: _v1(r, "model.ckpt-3", 2), "model.ckpt-3"),
    "v1 shard name": (lambda r: _v1(r, "model.ckpt-3", 2), "model.ckpt-3-00001-of-00002"),
    "v1 glob": (lambda r: _v1(r, "model.ckpt-3", 2), "model.ckpt-3-?????-of-00002"),
    "v1 shards .meta": (lambda r: _v1(r, "model.ckpt-3", 2), "model.ckpt-3.meta"),
    "v1 state glob": (lambda r: (_v1(r, "ckpts/model.ckpt-3", 2), _state(r / "ckpts", "model.ckpt-3-?????-of-00002")),
                      "ckpts"),
    "v1 state file": (lambda r: (_v1(r, "ckpts/model.ckpt-3", 1), _state(r / "ckpts", "model.ckpt-3")), "ckpts"),
    "v1 dir without state": (lambda r: _v1(r, "ckpts/model.ckpt-3", 2), "ckpts"),
    "v1 file dir without state": (lambda r: _v1(r, "ckpts/model.ckpt-3", 1), "ckpts/"),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_prefix_form_reads_through_every_entry_point(tmp_path, capsys, form) -> None:
    from rnnkit.__main__ import main as cli

    setup, given = FORMS[form]
    setup(tmp_path)
    path = f"{tmp_path}/{given}"  # text: Path() would drop a trailing slash
    _check_all(path, FORM_TENSORS)
    assert list_variables(path) == sorted((n, list(v.shape)) for n, v in FORM_TENSORS.items())
    cell = rk.BasicLSTMCell(2)
    assert rk.load_tf_checkpoint(cell, path) == rk.LoadResult([], [], [])
    assert np.array_equal(cell.kernel.detach().numpy(), FORM_TENSORS["rnn/basic_lstm_cell/kernel"])
    assert cli(["convert", path, "--list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert sorted(listing) == sorted(f"{n}\t{list(v.shape)}" for n, v in FORM_TENSORS.items())


def test_paths_that_hold_no_checkpoint_name_what_was_tried(tmp_path, capsys) -> None:
    from rnnkit.__main__ import main as cli

    with pytest.raises(FormatError, match=r"nothing: no checkpoint there \(no such checkpoint index .*nothing\.index"):
        load_variables(tmp_path / "nothing")
    with pytest.raises(FormatError, match=r"model\.ckpt\.index: no checkpoint there .*model\.ckpt\.index"):
        list_variables(tmp_path / "model.ckpt.index")  # the prefix tried is model.ckpt
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match=r"empty: no checkpoint there: a directory without a 'checkpoint' state file"):
        rk.load_tf_checkpoint(rk.BasicLSTMCell(2), tmp_path / "empty")
    _v2(tmp_path, "two/a.ckpt-1")
    _v2(tmp_path, "two/a.ckpt-2")
    with pytest.raises(FormatError, match=r"two: no 'checkpoint' state file .* 2 checkpoints is the latest: .*a\.ckpt-1, .*a\.ckpt-2"):
        load_variables(tmp_path / "two")
    _state(tmp_path / "two", "a.ckpt-9")
    with pytest.raises(FormatError, match=r"two/checkpoint: names 'a\.ckpt-9', but there is no checkpoint there"):
        list_variables(tmp_path / "two")
    _state(tmp_path / "two", "/elsewhere/a.ckpt-9")  # absolute: tried there, then beside the state file
    with pytest.raises(FormatError, match=r"index /elsewhere/a\.ckpt-9\.index.*two/a\.ckpt-9\.index"):
        list_variables(tmp_path / "two")
    _v1(tmp_path, "v1/m", 3)
    (tmp_path / "v1" / "m-00001-of-00003").unlink()
    with pytest.raises(FormatError, match=r"missing V1 shard file m-00001-of-00003"):
        load_variables(tmp_path / "v1" / "m-00000-of-00003")  # a shard's name never reads it alone
    assert cli(["convert", str(tmp_path / "nothing"), "--list"]) == 2
    assert "no checkpoint there" in capsys.readouterr().err
    with pytest.raises(TypeError, match="path must be"):
        load_variables(3)  # type: ignore[arg-type]


def test_a_state_file_wins_over_the_directory_listing(tmp_path) -> None:
    tensors = {"w": RNG.standard_normal(3).astype(np.float32)}
    write_bundle(tmp_path / "a.ckpt-1", {"w": np.zeros(3, np.float32)})
    write_bundle(tmp_path / "a.ckpt-2", tensors)
    _state(tmp_path, "a.ckpt-2")
    assert np.array_equal(load_variables(tmp_path)["w"], tensors["w"])
    assert np.array_equal(load_variables(f"{tmp_path}/a.ckpt-1.index")["w"], np.zeros(3))  # a prefix is itself
