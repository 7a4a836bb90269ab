"""The commands as a user meets them: help, version, one-line errors on stderr with exit status 2,
the start and progress lines, resumes that ask for too little, sampling at any temperature."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

import rnnkit as rk
from rnnkit.__main__ import main as cli
from rnnkit.charlm import checkpoint, progress, sample
from rnnkit.charlm.cli import plural
from rnnkit.charlm.data import DataError, streams
from rnnkit.charlm.train import model_for
from tests.charlm_common import TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus) -> Path:
    """A run of 10 steps."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert cli(["train", "--data", str(corpus), "--run-dir", str(run), *TINY, "--steps", "10"]) == 0
    return run


def _status(argv: list[str]) -> int:
    """The exit status of the command: returned, or raised by argparse (help, usage errors)."""
    try:
        return cli(argv)
    except SystemExit as exit:
        return exit.code


def _one_error(capsys) -> str:
    """The single ``error:`` line the command wrote on stderr (and nothing on stdout)."""
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "error" not in captured.out, captured.out
    return err


# -- the top-level command ------------------------------------------------------------------------


def test_help_describes_the_commands(capsys) -> None:
    assert _status(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train ", "sample ", "convert "):
        assert re.search(rf"^\s+{command}\s+\w", out, re.MULTILINE), out  # each with a description
    assert "--version" in out and "COMMAND --help" in out


def test_version_is_the_package_version(capsys) -> None:
    assert _status(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"rnnkit {rk.__version__} (torch {torch.__version__}")


def test_a_mistyped_command_is_an_invalid_choice_listing_the_commands(capsys) -> None:
    assert _status(["trian"]) == 2
    err = _one_error(capsys)
    assert "invalid choice: 'trian'" in err and all(f"'{c}'" in err for c in ("train", "sample", "convert")), err


def test_no_command_prints_the_help_on_stderr_and_exits_2(capsys) -> None:
    assert _status([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "usage:" in captured.err and "sample" in captured.err


def test_console_script_is_declared() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"] == {"rnnkit": "rnnkit.__main__:main"}


def test_the_program_name_follows_how_it_was_started(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["/venv/bin/rnnkit", "train", "--help"])
    assert _status(sys.argv[1:]) == 0
    assert capsys.readouterr().out.startswith("usage: rnnkit train ")
    monkeypatch.setattr(sys, "argv", ["/src/rnnkit/__main__.py", "sample", "--help"])
    assert _status(sys.argv[1:]) == 0
    assert capsys.readouterr().out.startswith("usage: python -m rnnkit sample ")


# -- help texts -----------------------------------------------------------------------------------


def test_train_help_declares_choices_and_no_noise(capsys) -> None:
    assert _status(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: None)" not in out and "``" not in out and ":func:" not in out
    for choices in ("{lstm,gru,lstm-peephole}", "{adam,rmsprop,sgd}", "{cpu,cuda}"):
        assert choices in out.split("\n\n")[0], choices  # in the usage lines
    flat = " ".join(out.split())
    assert ".txt and .md files are read" in flat and "(default: 1100)" in flat and "(default: 0.005)" in flat
    assert "--resume DIR" in flat and "Ctrl-C" in flat


def test_sample_help_documents_every_option(capsys) -> None:
    assert _status(["sample", "--help"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "--seed N seed of the random draws" in flat and "(default: 0)" in flat
    assert "--length N characters to draw (default: 500)" in flat
    assert "default: none: the model starts as after a newline" in flat


def test_convert_help_has_no_markup(capsys) -> None:
    assert _status(["convert", "--help"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out and "usage: python -m rnnkit convert" in out


# -- one-line errors, exit status 2 ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "gpu"], "argument --device: invalid choice: 'gpu' (choose from 'cpu', 'cuda')"),
        (["--optimizer", "adamw"], "argument --optimizer: invalid choice: 'adamw'"),
        (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
        (["--colour", "red"], "unrecognized arguments: --colour red"),
    ],
)
def test_usage_errors_are_one_line_on_stderr(tmp_path, corpus, capsys, args, message) -> None:
    assert _status(["train", "--data", str(corpus), "--run-dir", str(tmp_path / "run"), *args]) == 2
    err = _one_error(capsys)
    assert message in err and err.endswith("see python -m rnnkit train --help"), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lr", "inf"),
        ("--lr", "nan"),
        ("--lr", "0"),
        ("--clip", "inf"),
        ("--clip", "-1"),
        ("--timeout", "inf"),
        ("--epochs", "inf"),
        ("--epochs", "nan"),
    ],
)
def test_float_options_must_be_finite_and_positive(tmp_path, corpus, capsys, flag, value) -> None:
    assert _status(["train", "--data", str(corpus), "--run-dir", str(tmp_path / "run"), flag, value]) == 2
    assert f"{flag} must be a finite number > 0, got {float(value)}" in _one_error(capsys)
    assert not (tmp_path / "run").exists()


def test_dropout_nan_is_refused(tmp_path, corpus, capsys) -> None:
    assert _status(["train", "--data", str(corpus), "--run-dir", str(tmp_path / "run"), "--dropout", "nan"]) == 2
    assert "--dropout must be in [0, 1), got nan" in _one_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_cuda_device_is_one_line(tmp_path, corpus, capsys) -> None:
    assert _status(["train", "--data", str(corpus), "--run-dir", str(tmp_path / "run"), "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device is available" in _one_error(capsys)


def test_a_corpus_of_one_character_is_refused(tmp_path, capsys) -> None:
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"\0" * 20_000)
    assert _status(["train", "--data", str(nul), "--run-dir", str(tmp_path / "run")]) == 2
    err = _one_error(capsys)
    assert f"--data {nul}: the text has 1 distinct character ('\\x00')" in err, err
    assert "needs at least 2 distinct characters" in err
    assert not (tmp_path / "run").exists()


def test_counts_are_pluralised() -> None:
    assert [plural(n, "character") for n in (0, 1, 2, 1000)] == [
        "0 characters",
        "1 character",
        "2 characters",
        "1,000 characters",
    ]
    with pytest.raises(DataError, match=r"text \(1 character\) is shorter than one batch: 1 stream x 6 characters"):
        streams(torch.zeros(1, dtype=torch.long), 1, 5, "validation")


def test_convert_on_a_training_checkpoint_says_what_to_do(trained, tmp_path, capsys) -> None:
    for source in (trained / "last.pt", trained):
        assert _status(["convert", str(source), str(tmp_path / "out.pt")]) == 2
        err = _one_error(capsys)
        assert f"{source}: a checkpoint of python -m rnnkit train" in err, err
        assert f"python -m rnnkit sample {source}" in err
    assert not (tmp_path / "out.pt").exists()


def test_sample_errors_are_one_line_on_stderr(trained, capsys) -> None:
    for args, message in (
        (["--temperature", "inf"], "--temperature must be a finite number > 0, got inf"),
        (["--temperature", "nan"], "--temperature must be a finite number > 0, got nan"),
        (["--temperature", "0"], "--temperature must be a finite number > 0, got 0.0"),
        (["--length", "-1"], "--length must be >= 0"),
        (["--prime", "XYZ"], "--prime: characters not in the model's vocabulary: 'XYZ'"),
    ):
        assert _status(["sample", str(trained), *args]) == 2, args
        assert message in _one_error(capsys), args


# -- resuming -------------------------------------------------------------------------------------


def test_resume_with_fewer_steps_than_done_is_an_error_and_changes_nothing(trained, capsys) -> None:
    before = {name: (trained / name).read_bytes() for name in ("config.json", "metrics.jsonl", "last.pt")}
    assert _status(["train", "--resume", str(trained), "--steps", "5"]) == 2
    err = _one_error(capsys)
    assert err.startswith(f"error: --steps 5: the run in {trained} is already at step 10"), err
    assert {name: (trained / name).read_bytes() for name in before} == before


def test_resume_of_a_finished_run_has_nothing_to_do(trained, capsys) -> None:
    before = (trained / "config.json").read_bytes()
    assert _status(["train", "--resume", str(trained)]) == 0
    assert "already at step 10 of 10: nothing to do" in capsys.readouterr().out
    assert (trained / "config.json").read_bytes() == before


def test_resume_takes_the_directory_not_the_file(trained, capsys) -> None:
    assert _status(["train", "--resume", str(trained / "last.pt"), "--steps", "20"]) == 2
    assert f"give the run's directory ({trained})" in _one_error(capsys)


def test_config_json_records_the_run_directory(tmp_path, corpus, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli(["train", "--data", str(corpus), *TINY, "--steps", "1"]) == 0  # the default: runs/<time>
    [run] = (tmp_path / "runs").iterdir()
    recorded = Path(json.loads((run / "config.json").read_text())["config"]["run_dir"])
    assert recorded.is_absolute() and recorded.resolve() == run.resolve()
    assert str(Path("runs") / run.name) in capsys.readouterr().out


# -- what training prints -------------------------------------------------------------------------


def test_the_start_line_and_a_progress_line_per_interval(tmp_path, corpus, capsys, monkeypatch) -> None:
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.0)  # a line after every step
    run = tmp_path / "run"
    assert cli(["train", "--data", str(corpus), "--run-dir", str(run), *TINY, "--steps", "12"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines[0]
    assert start.startswith(f"corpus: {corpus}, 9,000 characters (8,100 train, 900 validation), vocabulary 28 |")
    parameters = sum(p.numel() for p in model_for(checkpoint.load(run)).parameters())
    assert f"model: 2 x lstm, 32 units, {parameters:,} parameters | run: {run}, 12 steps" in start
    assert f"device: cpu, {plural(torch.get_num_threads(), 'thread')}" in start
    steps = [line for line in lines if line.startswith("step ") and "/12:" in line]
    assert [int(line.split()[1].split("/")[0]) for line in steps] == list(range(1, 13))
    pattern = r"step \d+/12: loss \d+\.\d{3} nats/char \(smoothed\), [\d,]+ chars/s, elapsed \d+:\d\d, ETA \d+:\d\d"
    assert all(re.fullmatch(pattern, line) for line in steps), steps
    assert "step 10: val loss" in "\n".join(lines)


def test_progress_lines_come_after_the_first_step_and_then_every_interval(capsys) -> None:
    now = [0.0]
    shown = progress.Progress(total=100, initial=0, chars_per_step=1000, terminal=False, clock=lambda: now[0])
    for step, seconds in enumerate([2.0, 5.0, 12.0, 13.0, 22.0], start=1):
        now[0] = seconds
        shown.update(step, loss=1.0)
    shown.close()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["step 1/100", "step 3/100", "step 5/100"]
    # step 3 at 12 s: 3,000 characters in 12 s, 97 steps to go at 4 s each
    assert lines[1] == "step 3/100: loss 1.000 nats/char (smoothed), 250 chars/s, elapsed 0:12, ETA 6:28"
    assert progress.clock_time(59.6) == "1:00" and progress.clock_time(3723) == "1:02:03"


def test_progress_of_a_resumed_run_counts_from_its_step(capsys) -> None:
    now = [0.0]
    shown = progress.Progress(total=600, initial=300, chars_per_step=100, terminal=False, clock=lambda: now[0])
    now[0] = 3.0
    shown.update(301, loss=2.0)
    assert capsys.readouterr().out.strip() == (
        "step 301/600: loss 2.000 nats/char (smoothed), 33 chars/s, elapsed 0:03, ETA 14:57"
    )


def test_the_smoothed_loss_is_unbiased_and_follows_the_recent_steps() -> None:
    smoothed = progress.SmoothedLoss(beta=0.9)
    assert smoothed.add(4.0) == pytest.approx(4.0)  # not pulled towards 0
    for _ in range(200):
        value = smoothed.add(1.0)
    assert value == pytest.approx(1.0, abs=1e-6)


def test_the_bar_shows_the_smoothed_loss_first(capsys) -> None:
    now = [0.0]
    shown = progress.Progress(total=10, initial=0, chars_per_step=100, terminal=True, clock=lambda: now[0])
    for step, loss in enumerate([3.0, 1.0], start=1):
        now[0] = float(step)
        shown.update(step, loss)
    postfix = shown.bar.postfix
    shown.close()
    assert postfix == "loss 1.974, 100 chars/s"  # (0.95 * 0.05 * 3 + 0.05 * 1) / (1 - 0.95^2); 200 chars in 2 s
    assert "loss" in capsys.readouterr().err  # the bar is on stderr; stdout keeps the log


# -- sampling -------------------------------------------------------------------------------------


def test_sampling_works_at_any_finite_positive_temperature(trained, capsys) -> None:
    # a tiny temperature is greedy: always the most likely character
    saved = checkpoint.load(trained / "best.pt")
    model = model_for(saved).eval()
    vocab = saved["vocab"]
    with torch.no_grad():
        ids = torch.tensor([[vocab.index("t")]])
        greedy = ""
        logits, state = model(ids)
        for _ in range(30):
            next_id = int(logits[0, -1].argmax())
            greedy += vocab[next_id]
            logits, state = model(torch.tensor([[next_id]]), state)
    for temperature in ("1e-40", "1e-320", "5e-324"):
        assert cli(["sample", str(trained), "--prime", "t", "--length", "30", "--temperature", temperature]) == 0
        assert capsys.readouterr().out == "t" + greedy + "\n", temperature
    assert cli(["sample", str(trained), "--length", "30", "--temperature", "1e300"]) == 0  # near uniform
    assert len(capsys.readouterr().out) == 31


def test_the_distribution_is_finite_for_extreme_logits() -> None:
    logits = torch.tensor([1e30, -1e30, 0.0, 1e30])
    for temperature in (5e-324, 1e-40, 1.0, 1e300):
        probabilities = sample.next_distribution(logits, temperature)
        assert torch.isfinite(probabilities).all() and math.isclose(float(probabilities.sum()), 1.0)
    assert sample.next_distribution(logits, 1e-40).tolist() == [0.5, 0.0, 0.0, 0.5]


def test_without_a_prime_the_model_starts_after_a_newline() -> None:
    assert sample.start_character(["\t", "\n", " ", "a"]) == "\n"
    assert sample.start_character(["a", "b"]) == "a"
