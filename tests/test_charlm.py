"""The training application: it learns, samples, resumes exactly, and refuses bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rnnkit as rk
from rnnkit.__main__ import main as cli
from rnnkit.charlm import checkpoint
from rnnkit.charlm.train import FINAL_LR_FRACTION, TrainConfig, config_from_saved, learning_rate
from tests.charlm_common import TINY


def _train(run_dir: Path, corpus: Path, *extra: str) -> int:
    return cli(["train", "--data", str(corpus), "--run-dir", str(run_dir), *TINY, *extra])


def test_loss_decreases_and_the_run_directory_is_complete(tmp_path, corpus) -> None:
    assert _train(tmp_path / "run", corpus, "--steps", "60", "--lr", "0.01") == 0
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.jsonl", "loss.png", "last.pt", "best.pt"}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first, last = records[0], records[-1]
    assert last["val_loss"] < 0.8 * first["val_loss"]
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_has_the_requested_length_and_vocabulary(tmp_path, corpus, capsys) -> None:
    assert _train(tmp_path / "run", corpus, "--steps", "20") == 0
    capsys.readouterr()
    assert cli(["sample", str(tmp_path / "run"), "--prime", "the ", "--length", "50", "--temperature", "0.5"]) == 0
    text = capsys.readouterr().out.rstrip("\n")
    assert len(text) == 4 + 50 and text.startswith("the ")
    assert set(text) <= set(corpus.read_text())


def test_resume_equals_an_uninterrupted_run(tmp_path, corpus) -> None:
    # a constant rate: the cosine schedule's curve depends on --steps, which grows here
    constant = ("--dropout", "0.2", "--lr-schedule", "constant")
    assert _train(tmp_path / "straight", corpus, "--steps", "30", *constant) == 0
    assert _train(tmp_path / "split", corpus, "--steps", "20", *constant) == 0
    assert cli(["train", "--resume", str(tmp_path / "split"), "--steps", "30"]) == 0
    straight = checkpoint.load(tmp_path / "straight")
    resumed = checkpoint.load(tmp_path / "split")
    assert resumed["step"] == straight["step"] == 30
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


def _status(argv: list[str]) -> int:
    """The exit status of the command: returned, or raised by argparse (usage errors)."""
    try:
        return cli(argv)
    except SystemExit as exit:
        return exit.code


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "/no/such/file"], "no such file"),
        (["--units", "0"], "--units must be >= 1"),
        (["--dropout", "1.5"], "--dropout must be in"),
        (["--lr", "-1"], "--lr must be a finite number > 0"),
        (["--cell", "rnn"], "argument --cell: invalid choice: 'rnn'"),
        (["--batch-size", "100000"], "shorter than one batch"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, corpus, capsys, args, message) -> None:
    base = ["train", "--run-dir", str(tmp_path / "run"), "--steps", "1"]
    if "--data" not in args:
        base += ["--data", str(corpus)]
    assert _status(base + args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert "error" not in captured.out
    assert not (tmp_path / "run").exists()


def test_bad_files_exit_2(tmp_path, capsys) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "last.pt").write_bytes(b"not a checkpoint")
    for argv, message in (
        (["train", "--data", str(empty)], "empty"),
        (["train", "--data", str(binary)], "not UTF-8"),
        (["train", "--resume", str(corrupt)], "not a readable checkpoint"),
        (["sample", str(tmp_path / "nowhere")], "no checkpoint"),
    ):
        assert cli(argv) == 2, argv
        assert message in capsys.readouterr().err


def test_module_entry_point(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "rnnkit"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr and result.stdout == ""
    assert all(command in result.stderr for command in ("train", "sample", "convert"))


def _absolute_gradient_terms(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
    """Per weight, the sum over the batch's B*T positions of |d loss_i / d w| / (B*T): the scale
    of the rounding error of the mean gradient, whatever order its terms are summed in."""
    logits, _ = model(inputs)
    losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    weights = dict(model.named_parameters())
    total = {name: torch.zeros_like(w) for name, w in weights.items()}
    for loss in losses / losses.numel():
        grads = torch.autograd.grad(loss, list(weights.values()), retain_graph=True, allow_unused=True)
        for name, grad in zip(weights, grads):
            if grad is not None:
                total[name] += grad.abs()
    return total


def test_two_processes_equal_one_over_the_same_global_batch(tmp_path, corpus) -> None:
    # torchrun, 2 processes over loopback (gloo): DDP averages the gradients of the two halves of
    # the batch. One plain SGD step (no clipping) from the same weights on the same window: the
    # two runs differ only in the order float32 sums the gradient's terms, so per weight
    #   |w_two - w_one| <= lr * 2 * gamma * A + eps * max(|w_two|, |w_one|)
    # with gamma = (sum length) * eps, A the sum of the terms' absolute values, the sum length the
    # B*T positions plus the K = 2 * units inner products and the T steps each term is computed
    # through, and the last term the rounding of the two updates, u * (|w_two| + |w_one|), where
    # a difference of one ulp at |w| = 2^k is exactly eps * |w|. (Several Adam steps amplify such
    # differences: they are not equal.)
    from rnnkit.charlm.data import window
    from rnnkit.charlm.train import Run, TrainConfig

    lr, batch, seq_len, units = 0.5, 8, 20, 32
    args = ["--data", str(corpus), *TINY, "--steps", "1", "--eval-every", "1", "--dropout", "0",
            "--optimizer", "sgd", "--lr", str(lr), "--clip", "1e9"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*launcher, "-m", "rnnkit", "train", *args, "--run-dir", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert cli(["train", *args, "--run-dir", str(tmp_path / "one")]) == 0
    two, one = checkpoint.load(tmp_path / "two"), checkpoint.load(tmp_path / "one")
    start = Run(TrainConfig(data=str(corpus), units=units, layers=2, batch_size=batch, seq_len=seq_len, dropout=0,
                            run_dir=str(tmp_path / "start")))  # the weights and window both runs began from
    inputs, targets = window(start.train_ids, 0, seq_len)
    terms = _absolute_gradient_terms(start.model, inputs, targets)
    eps = torch.finfo(torch.float32).eps
    gamma = (batch * seq_len + 2 * units + seq_len) * eps
    for name, value in one["model"].items():
        rounding = eps * torch.maximum(value.abs(), two["model"][name].abs())
        bound = lr * 2 * gamma * terms[name] + rounding + torch.finfo(torch.float32).tiny
        difference = (two["model"][name] - value).abs()
        assert (difference <= bound).all(), f"{name}: {(difference / bound).max():.3g} x the bound"
        assert not torch.equal(value, start.model.state_dict()[name]) or terms[name].max() == 0, name
    for a, b in zip(rk.flatten_state(two["state"]), rk.flatten_state(one["state"])):
        assert a.shape == b.shape == (batch, units)  # the whole batch's carried state, gathered from both
        # rows are computed independently: only the T steps of K-term inner products round differently
        bound = seq_len * 2 * units * eps * b.abs().max()
        assert (a - b).abs().max() <= bound


def test_batch_must_split_evenly_across_processes(tmp_path, corpus) -> None:
    from rnnkit.charlm.distributed import World
    from rnnkit.charlm.train import ConfigError, Run, TrainConfig

    with pytest.raises(ConfigError, match="multiple of the 3 processes"):
        Run(TrainConfig(data=str(corpus), batch_size=8, run_dir=str(tmp_path / "r")), world=World(0, 3))


def test_a_checkpoint_that_does_not_fit_its_config_is_a_clear_error(tmp_path, corpus, capsys) -> None:
    assert _train(tmp_path / "run", corpus, "--steps", "10") == 0
    saved = checkpoint.load(tmp_path / "run")
    saved["config"]["units"] = 48  # the weights are for 32 units
    checkpoint.save(tmp_path / "run" / "last.pt", {k: v for k, v in saved.items() if k != "format"})
    capsys.readouterr()
    assert cli(["train", "--resume", str(tmp_path / "run"), "--steps", "20"]) == 2
    assert "weights do not fit its configuration" in capsys.readouterr().err


def test_the_cosine_schedule_falls_from_lr_to_its_floor_at_steps() -> None:
    config = TrainConfig(lr=0.01, steps=100)
    rates = [learning_rate(config, step) for step in range(0, 131)]
    assert rates[0] == pytest.approx(0.01, rel=1e-12)
    assert rates[50] == pytest.approx(0.01 * (1 + FINAL_LR_FRACTION) / 2, rel=1e-12)
    assert all(later < earlier for earlier, later in zip(rates[:100], rates[1:101]))
    assert rates[100:] == [pytest.approx(0.01 * FINAL_LR_FRACTION, rel=1e-12)] * 31  # past --steps: the floor
    assert learning_rate(TrainConfig(lr=0.01, steps=100, lr_schedule="constant"), 70) == 0.01


def test_the_optimizer_trains_at_the_scheduled_rate(tmp_path, corpus) -> None:
    assert _train(tmp_path / "run", corpus, "--steps", "20", "--lr", "0.01") == 0
    saved = checkpoint.load(tmp_path / "run")
    config = config_from_saved(saved["config"])
    assert config.lr_schedule == "cosine"
    assert [group["lr"] for group in saved["optimizer"]["param_groups"]] == [learning_rate(config, 19)]


def test_a_checkpoint_from_before_the_schedules_resumes_at_a_constant_rate(tmp_path, corpus) -> None:
    assert _train(tmp_path / "run", corpus, "--steps", "10", "--lr-schedule", "constant") == 0
    saved = checkpoint.load(tmp_path / "run")
    del saved["config"]["lr_schedule"]
    assert config_from_saved(saved["config"]).lr_schedule == "constant"
    checkpoint.save(tmp_path / "run" / "last.pt", {k: v for k, v in saved.items() if k != "format"})
    assert cli(["train", "--resume", str(tmp_path / "run"), "--steps", "20"]) == 0
    resumed = checkpoint.load(tmp_path / "run")
    assert [group["lr"] for group in resumed["optimizer"]["param_groups"]] == [TrainConfig().lr]


def test_the_schedule_cannot_change_on_resume(tmp_path, corpus, capsys) -> None:
    assert _train(tmp_path / "run", corpus, "--steps", "10") == 0
    capsys.readouterr()
    assert cli(["train", "--resume", str(tmp_path / "run"), "--steps", "20", "--lr-schedule", "constant"]) == 2
    assert "--lr-schedule cannot change" in capsys.readouterr().err
