"""A file whose pickle runs code is refused, unopened, by every command that reads torch files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rnnkit.__main__ import main as cli
from rnnkit.charlm import checkpoint


class Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _malicious(path: Path, marker: Path) -> Path:
    """A file that looks like a char-LM checkpoint and runs code when fully unpickled."""
    fake = {"format": checkpoint.FORMAT, "config": Payload(marker), "vocab": ["a"], "model": {}, "optimizer": {},
            "step": 1, "position": 0, "state": None, "rng": torch.zeros(1), "best_val": 1.0}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fake, path)
    return path


def _assert_refused(capsys, code: int, path: Path, marker: Path) -> None:
    out = capsys.readouterr().err.strip()
    assert code == 2, out
    assert not marker.exists(), "the file's code ran"
    assert out.startswith("error: ") and "\n" not in out, out
    assert str(path) in out and "not unpickled" in out and "objects other than tensors" in out, out


def test_the_payload_does_run_code_when_unpickled(tmp_path) -> None:
    # what the tests below guard against: torch.load(weights_only=False) builds the payload
    marker = tmp_path / "marker"
    torch.load(_malicious(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_checkpoint_load_refuses_it(tmp_path) -> None:
    marker = tmp_path / "marker"
    path = _malicious(tmp_path / "evil.pt", marker)
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path)
    assert not marker.exists()
    message = str(caught.value)
    assert str(path) in message and "not unpickled" in message and "\n" not in message


@pytest.mark.parametrize("name", ["last.pt", "best.pt"])
def test_sample_of_a_run_directory_refuses_it(tmp_path, capsys, name) -> None:
    marker = tmp_path / "marker"
    path = _malicious(tmp_path / "run" / name, marker)
    _assert_refused(capsys, cli(["sample", str(tmp_path / "run"), "--length", "5"]), path, marker)


def test_sample_of_a_checkpoint_file_refuses_it(tmp_path, capsys) -> None:
    marker = tmp_path / "marker"
    path = _malicious(tmp_path / "model.pt", marker)
    _assert_refused(capsys, cli(["sample", str(path), "--length", "5"]), path, marker)


def test_train_resume_refuses_it(tmp_path, capsys) -> None:
    marker = tmp_path / "marker"
    path = _malicious(tmp_path / "run" / "last.pt", marker)
    _assert_refused(capsys, cli(["train", "--resume", str(tmp_path / "run"), "--steps", "2"]), path, marker)


def test_convert_refuses_it_without_the_opt_in(tmp_path, capsys) -> None:
    marker = tmp_path / "marker"
    path = _malicious(tmp_path / "module.pt", marker)
    _assert_refused(capsys, cli(["convert", str(path), str(tmp_path / "out.pt")]), path, marker)
    assert not (tmp_path / "out.pt").exists()


def test_convert_help_says_the_opt_in_is_dangerous(capsys) -> None:
    with pytest.raises(SystemExit):
        cli(["convert", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--unsafe-pickle" in text and "DANGEROUS" in text and "runs any code" in text


def test_a_genuine_checkpoint_loads_with_weights_only(tmp_path) -> None:
    corpus = tmp_path / "text.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 50, encoding="utf-8")
    args = ["--units", "8", "--layers", "2", "--batch-size", "2", "--seq-len", "10", "--steps", "2"]
    assert cli(["train", "--data", str(corpus), "--run-dir", str(tmp_path / "run"), *args, "--eval-every", "2"]) == 0
    for name in ("last.pt", "best.pt"):
        saved = torch.load(tmp_path / "run" / name, weights_only=True)
        assert saved["step"] == 2 and saved["state"][0].c.shape == (2, 8)  # LSTMStateTuple is a safe global


@pytest.mark.parametrize("kind", ["rnnkit.LSTMCell", "rnnkit.GRUCell"])
def test_a_module_file_claiming_huge_sizes_allocates_nothing_and_is_refused(tmp_path, capsys, kind) -> None:
    # the config says 2^40 weights, the file holds a few bytes: the cell is built on the meta
    # device and takes the file's weights only where names and shapes fit (torch types take
    # their sizes from the weights alone)
    config = {"num_units": 1 << 20, "input_size": 1 << 20}
    path = tmp_path / "big.pt"
    state = {"kernel": torch.zeros(3, 8), "bias": torch.zeros(8)}
    torch.save({"format": "rnnkit-module-1", "type": kind, "config": config, "state_dict": state}, path)
    code = cli(["convert", str(path), str(tmp_path / "out.pt")])
    out = capsys.readouterr().err.strip()
    assert code == 2 and out.startswith("error: ") and str(path) in out and "\n" not in out, out
    assert not (tmp_path / "out.pt").exists()


@pytest.fixture(scope="module")
def genuine_run(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("genuine")
    corpus = root / "text.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 50, encoding="utf-8")
    args = ["--units", "8", "--layers", "2", "--batch-size", "2", "--seq-len", "10", "--steps", "2", "--eval-every", "2"]
    assert cli(["train", "--data", str(corpus), "--run-dir", str(root / "run"), *args]) == 0
    return root / "run", torch.load(root / "run" / "last.pt", weights_only=True)


CRAFTED = {  # checkpoints that load safely but hold what no run wrote
    "a string state": {"state": "abc"},
    "a state of the wrong shape": {"state": (torch.zeros(3, 2),)},
    "a float RNG state": {"rng": torch.zeros(3)},
    "a negative step": {"step": -5},
    "an empty vocabulary": {"vocab": []},
    "repeated characters": {"vocab": ["a", "a"]},
    "no weights": {"model": {}},
    "a text number of units": {"config_update": {"units": "x"}},
    "huge sizes": {"config_update": {"units": 1 << 20, "layers": 64}},
    "an unknown setting": {"config_update": {"colour": "red"}},
}


@pytest.mark.parametrize("command, what", [
    (command, what) for command in ("train", "sample") for what in sorted(CRAFTED)
    if not (command == "sample" and what == "a state of the wrong shape")  # sampling never reads the state
])
def test_crafted_checkpoints_are_one_line_errors(tmp_path, capsys, genuine_run, command, what) -> None:
    run, saved = genuine_run
    change = dict(CRAFTED[what])
    if "config_update" in change:
        change = {"config": {**saved["config"], **change.pop("config_update")}}
    target = tmp_path / "run"
    target.mkdir()
    torch.save({**saved, **change}, target / "last.pt")
    argv = ["train", "--resume", str(target), "--steps", "4"] if command == "train" else \
        ["sample", str(target / "last.pt"), "--length", "3"]
    code = cli(argv)
    out = capsys.readouterr().err.strip()
    assert code == 2 and out.startswith("error: ") and "\n" not in out, out
    assert str(target) in out, out
