"""Runs that are killed, interrupted by Ctrl-C, run out of disk or lose a torchrun peer leave a
consistent directory and one line of error; files are durable and follow the umask.

Crashes are injected at chosen points (a launcher script patches a function to ``os._exit``),
never timed: nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnkit import _files
from rnnkit.__main__ import main as cli
from rnnkit.charlm import checkpoint, interrupt
from rnnkit.charlm.distributed import describe_failure
from rnnkit.charlm.metrics import repair_metrics
from tests.charlm_common import TINY

STEPS = 40


@pytest.fixture(scope="module")
def straight(tmp_path_factory, corpus) -> Path:
    """An uninterrupted run of STEPS steps."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert cli(["train", "--data", str(corpus), "--run-dir", str(run), *TINY, "--steps", str(STEPS)]) == 0
    return run


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _temporaries(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith("."))


# -- killed runs ------------------------------------------------------------------------------

CRASHES = {
    # after last.pt of step 20 is written, before its metrics line
    "after-checkpoint": """
real = checkpoint.save
def save(path, saved):
    real(path, saved)
    if path.name == "last.pt" and saved["step"] == 20:
        os._exit(9)
checkpoint.save = save
""",
    # halfway through writing the checkpoints of step 30: a torn temporary file is left
    "mid-checkpoint": """
real = torch.save
def save(obj, file, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("step") == 30 and hasattr(file, "write"):
        file.write(b"PK\\x03\\x04 half a checkpoint")
        file.flush()
        os._exit(9)
    return real(obj, file, *args, **kwargs)
torch.save = save
""",
    # in the middle of the steps between two evaluations
    "mid-step": """
real = train.Run.train_step
def train_step(self):
    if self.step == 25:
        os._exit(9)
    return real(self)
train.Run.train_step = train_step
""",
}


def _launcher(tmp_path: Path, patch: str) -> Path:
    script = tmp_path / "launch.py"
    script.write_text("import os, signal, sys\nimport torch\nfrom rnnkit.charlm import checkpoint, train\n"
                      f"{patch}\nsys.exit(train.main(sys.argv[1:]))\n")
    return script


@pytest.mark.parametrize("crash", sorted(CRASHES))
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, corpus, straight, crash) -> None:
    run = tmp_path / "run"
    command = [sys.executable, str(_launcher(tmp_path, CRASHES[crash])), "--data", str(corpus),
               "--run-dir", str(run), *TINY, "--steps", str(STEPS)]
    killed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert killed.returncode == 9, killed.stdout + killed.stderr
    before = [row["step"] for row in _rows(run)]
    assert before and max(before) <= checkpoint.load(run)["step"]  # never a line for a step not saved
    assert cli(["train", "--resume", str(run)]) == 0
    rows, expected = _rows(run), _rows(straight)
    assert [row["step"] for row in rows] == [row["step"] for row in expected] == [10, 20, 30, 40]
    for row, want in zip(rows, expected):
        assert (row["train_loss"], row["val_loss"]) == (want["train_loss"], want["val_loss"]), row["step"]
    resumed, uninterrupted = checkpoint.load(run), checkpoint.load(straight)
    assert resumed["step"] == uninterrupted["step"] == STEPS
    for name, value in uninterrupted["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    assert _temporaries(run) == []


def test_resume_drops_metrics_past_the_checkpoint_and_torn_lines(tmp_path, corpus) -> None:
    # what earlier versions left: lines for steps the checkpoint lacks, a torn last line
    run = tmp_path / "run"
    assert cli(["train", "--data", str(corpus), "--run-dir", str(run), *TINY, "--steps", "20"]) == 0
    metrics = run / "metrics.jsonl"
    good = metrics.read_text()
    metrics.write_text(good + json.dumps({"step": 30, "val_loss": 9.0}) + "\n" + '{"step": 40, "val_')
    repair_metrics(metrics, 20, None)
    assert metrics.read_text() == good
    metrics.write_text(good + good + '{"step": 3')  # an old bug's duplicates: the later rows stay
    repair_metrics(metrics, 20, None)
    assert [row["step"] for row in _rows(run)] == [10, 20]
    metrics.write_text(good.splitlines(keepends=True)[0])  # killed before the line of step 20
    record = {"step": 20, "val_loss": 1.0}
    repair_metrics(metrics, 20, record)
    assert _rows(run)[-1] == record


def test_a_new_run_refuses_a_directory_that_is_not_empty(tmp_path, corpus, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 10}\n')
    assert cli(["train", "--data", str(corpus), "--run-dir", str(run), *TINY, "--steps", "10"]) == 2
    out = capsys.readouterr().err.strip()
    assert out.startswith("error: ") and "not empty" in out and "\n" not in out
    assert (run / "metrics.jsonl").read_text() == '{"step": 10}\n' and sorted(os.listdir(run)) == ["metrics.jsonl"]


def test_only_the_writers_temporary_files_are_removed(tmp_path) -> None:
    names = [".last.pt.0123456789abcdef.tmp", ".best.pt.k2j_x9ab", ".loss.png.fedcba9876543210.tmp",
             ".notes.txt.abcdefgh", "last.pt", ".last.pt", ".last.pt.keep", "mine.tmp"]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = _files.remove_stale_temporaries(tmp_path, ["last.pt", "best.pt", "loss.png"])
    assert sorted(p.name for p in removed) == sorted(names[:3])
    assert sorted(os.listdir(tmp_path)) == sorted(names[3:])


# -- a full disk --------------------------------------------------------------------------------


def _full_disk_for(monkeypatch, *targets: str) -> None:
    """Writes of the temporary files for ``targets`` go to /dev/full: a real ENOSPC."""
    real = _files._create_temporary

    def create(path: Path) -> tuple[int, Path]:
        descriptor, temporary = real(path)
        if path.name in targets:
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, descriptor)
            os.close(full)
        return descriptor, temporary

    monkeypatch.setattr(_files, "_create_temporary", create)


def test_a_full_disk_is_one_line_and_the_checkpoint_survives(tmp_path, corpus, capsys, monkeypatch) -> None:
    run = tmp_path / "run"
    assert cli(["train", "--data", str(corpus), "--run-dir", str(run), *TINY, "--steps", "10"]) == 0
    before = (run / "last.pt").read_bytes()
    _full_disk_for(monkeypatch, "last.pt", "best.pt")
    capsys.readouterr()
    assert cli(["train", "--resume", str(run), "--steps", "20"]) == 2
    out = capsys.readouterr().err.strip()
    assert out.startswith("error: ") and "no space left on device" in out and "\n" not in out, out
    assert ".pt: no space left" in out and str(run) in out
    assert (run / "last.pt").read_bytes() == before and checkpoint.load(run)["step"] == 10
    assert _temporaries(run) == []


def test_torch_save_on_a_full_disk_is_a_disk_full_error(tmp_path, monkeypatch) -> None:
    _full_disk_for(monkeypatch, "w.pt")
    with pytest.raises(_files.DiskFullError, match="w.pt: no space left on device"):
        _files.atomic_write_stream(tmp_path / "w.pt", lambda file: torch.save({"w": torch.ones(10_000)}, file))
    assert os.listdir(tmp_path) == []


# -- durability and permissions -----------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode) -> None:
    previous = os.umask(umask)
    try:
        _files.atomic_write_stream(tmp_path / "a.pt", lambda file: torch.save({}, file))
        _files.atomic_write(tmp_path / "b.json", lambda name: Path(name).write_text("{}"))
    finally:
        os.umask(previous)
    for name in ("a.pt", "b.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


@pytest.mark.parametrize("writer", ["stream", "name"])
def test_the_file_is_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch, writer) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, destination) -> None:
        events.append(("replace", str(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "x.bin"
    if writer == "stream":
        _files.atomic_write_stream(target, lambda file: file.write(b"data"))
    else:
        _files.atomic_write(target, lambda name: Path(name).write_bytes(b"data"))
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert Path(events[0][1]).name.startswith(".x.bin.") and events[0][1].endswith(".tmp")
    assert events[1][1] == str(target) and events[2][1] == str(tmp_path)
    assert target.read_bytes() == b"data"


# -- Ctrl-C ------------------------------------------------------------------------------------


def _during_step(monkeypatch, step: int, action) -> None:
    """``action()`` runs inside the ``step``-th training step of the next run, after its forward
    and backward passes (dropout has drawn its masks) and before the weights change."""
    real, calls = torch.nn.utils.clip_grad_norm_, []

    def clip(*args, **kwargs):
        calls.append(None)
        if len(calls) == step:
            action()
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)


def _ctrl_c() -> None:
    signal.raise_signal(signal.SIGINT)


def _ctrl_c_twice() -> None:
    signal.raise_signal(signal.SIGINT)
    signal.raise_signal(signal.SIGINT)


def _keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def _assert_resumes_to_the_uninterrupted_result(run: Path, straight: Path) -> None:
    assert cli(["train", "--resume", str(run)]) == 0
    rows, expected = _rows(run), _rows(straight)
    assert [row["step"] for row in rows] == [10, 20, 30, 40]
    for row, want in zip(rows, expected):
        assert (row["train_loss"], row["val_loss"]) == (want["train_loss"], want["val_loss"]), row["step"]
    resumed, uninterrupted = checkpoint.load(run), checkpoint.load(straight)
    for name, value in uninterrupted["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    assert _temporaries(run) == []


@pytest.mark.parametrize("how, grace, saved_step", [
    ("ctrl-c", 2.0, 15),  # the step finishes, then last.pt
    ("ctrl-c twice at once", math.inf, 15),  # torchrun passes the terminal's Ctrl-C on: the same request
    ("ctrl-c twice, later", -1.0, 14),  # the second one abandons the step under way
    ("KeyboardInterrupt", 2.0, 14),  # raised in the step without the handler: abandoned, the RNG put back
])
def test_ctrl_c_saves_last_pt_says_how_to_resume_and_exits_130(
    tmp_path, corpus, straight, capsys, monkeypatch, how, grace, saved_step
) -> None:
    run = tmp_path / "run"
    action = {"ctrl-c": _ctrl_c, "ctrl-c twice at once": _ctrl_c_twice, "ctrl-c twice, later": _ctrl_c_twice,
              "KeyboardInterrupt": _keyboard_interrupt}[how]
    _during_step(monkeypatch, 15, action)
    monkeypatch.setattr(interrupt, "REPEAT_GRACE_SECONDS", grace)
    assert cli(["train", "--data", str(corpus), "--run-dir", str(run), *TINY, "--steps", str(STEPS)]) == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert lines == [f"interrupted at step {saved_step} of {STEPS}: saved {run / 'last.pt'}; continue with: "
                     f"python -m rnnkit train --resume {run}"], err
    assert "Traceback" not in err and "error" not in err
    assert checkpoint.load(run)["step"] == saved_step
    assert [row["step"] for row in _rows(run)] == [10]
    monkeypatch.undo()
    _assert_resumes_to_the_uninterrupted_result(run, straight)


def test_ctrl_c_while_the_weights_change_keeps_the_previous_checkpoint(
    tmp_path, corpus, straight, capsys, monkeypatch
) -> None:
    run = tmp_path / "run"
    real, calls = torch.optim.Adam.step, []

    def step(self, *args, **kwargs):
        calls.append(None)
        if len(calls) == 15:
            real(self, *args, **kwargs)  # the weights changed, the step is not done
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    assert cli(["train", "--data", str(corpus), "--run-dir", str(run), *TINY, "--steps", str(STEPS)]) == 130
    err = capsys.readouterr().err.strip()
    assert err == (f"interrupted during step 15 of {STEPS} (abandoned): {run / 'last.pt'} holds step 10; "
                   f"continue with: python -m rnnkit train --resume {run}"), err
    assert checkpoint.load(run)["step"] == 10
    monkeypatch.undo()
    _assert_resumes_to_the_uninterrupted_result(run, straight)


def test_ctrl_c_at_an_evaluation_step_saves_it_once(tmp_path, corpus, capsys, monkeypatch) -> None:
    run = tmp_path / "run"
    _during_step(monkeypatch, 10, _ctrl_c)
    saves = []
    real = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda path, saved: (saves.append((path.name, saved["step"])),
                                                                 real(path, saved)))
    assert cli(["train", "--data", str(corpus), "--run-dir", str(run), *TINY, "--steps", str(STEPS)]) == 130
    assert saves == [("best.pt", 10), ("last.pt", 10)]  # the evaluation's, not again
    assert [row["step"] for row in _rows(run)] == [10]
    assert f"interrupted at step 10 of {STEPS}: saved" in capsys.readouterr().err


def test_interrupted_before_any_checkpoint_says_so() -> None:
    stopped = interrupt.Interrupted(Path("runs/x"), 3, 600, None)
    assert stopped.describe() == ("interrupted at step 3 of 600, before any checkpoint: nothing to resume "
                                  "(a new run wants a new or empty --run-dir)")
    under = interrupt.Interrupted(Path("runs/x"), 7, 600, 7, processes=2).describe("rnnkit train")
    assert under == ("interrupted at step 7 of 600: saved runs/x/last.pt; continue with: rnnkit train --resume "
                     "runs/x (under torchrun, as before)")


def test_the_stop_request_takes_repeats_within_the_grace_as_one() -> None:
    now = [100.0]
    request = interrupt.StopRequest(clock=lambda: now[0])
    assert not request.requested
    request(signal.SIGINT, None)
    assert request.requested
    now[0] += interrupt.REPEAT_GRACE_SECONDS  # at the grace's end: still the same request
    request(signal.SIGINT, None)
    now[0] += 0.001
    with pytest.raises(KeyboardInterrupt):
        request(signal.SIGINT, None)


CTRL_C_ON_RANK_1 = """
import signal, sys, os
from rnnkit.charlm import train
real = train.Run.train_step
def train_step(self):
    if self.world.rank == 1 and self.step == 4:
        signal.raise_signal(signal.SIGINT)
    return real(self)
train.Run.train_step = train_step
sys.exit(train.main(sys.argv[1:]))
"""


def test_ctrl_c_on_one_process_stops_every_process_after_the_same_step(tmp_path, corpus) -> None:
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_ON_RANK_1)
    run = tmp_path / "run"
    args = [sys.executable, str(script), "--data", str(corpus), "--run-dir", str(run), *TINY, "--steps", "10"]
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    peer = subprocess.Popen(args, env={**env, "RANK": "1", "LOCAL_RANK": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        main = subprocess.run(args, env={**env, "RANK": "0", "LOCAL_RANK": "0"}, capture_output=True, text=True,
                              timeout=300)
        peer_out, peer_err = peer.communicate(timeout=60)
    finally:
        peer.kill()
        peer.wait()
    assert main.returncode == peer.returncode == 130, main.stderr + peer_err
    assert [line for line in main.stderr.splitlines() if line.startswith("interrupted")] == [
        f"interrupted at step 5 of 10: saved {run / 'last.pt'}; continue with: python -m rnnkit train --resume "
        f"{run} (under torchrun, as before)"], main.stderr
    assert "interrupted" not in peer_err and "Traceback" not in main.stderr + peer_err, peer_err
    saved = checkpoint.load(run)
    assert saved["step"] == 5 and saved["state"][0].c.shape == (8, 32)  # the whole batch's state, from both
    assert sorted(os.listdir(run)) == ["config.json", "last.pt"]


# -- torchrun peers -------------------------------------------------------------------------------

PEER_FAILS = """
import os, signal, sys
from rnnkit.charlm import train
real = train.Run.train_step
def train_step(self):
    if self.world.rank == 1 and self.step == 3:
        if os.environ["HOW"] == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        os._exit(1)
    return real(self)
train.Run.train_step = train_step
sys.exit(train.main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _two_ranks(tmp_path: Path, corpus: Path, how: str, *extra: str) -> subprocess.CompletedProcess:
    """Rank 0's result when rank 1 fails (``how``: exit or stop) before its 4th step; what
    torchrun would start, started by hand so that no agent kills rank 0 first."""
    script = tmp_path / "peer_fails.py"
    script.write_text(PEER_FAILS)
    args = [sys.executable, str(script), "--data", str(corpus), "--run-dir", str(tmp_path / "run"), *TINY,
            "--steps", "10", *extra]
    env = {**os.environ, "HOW": how, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    peer = subprocess.Popen(args, env={**env, "RANK": "1", "LOCAL_RANK": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return subprocess.run(args, env={**env, "RANK": "0", "LOCAL_RANK": "0"}, capture_output=True, text=True,
                              timeout=300)
    finally:
        peer.kill()
        peer.wait()


def _errors(result: subprocess.CompletedProcess) -> list[str]:
    """The ``error:`` lines of a command's stderr (torch's own warnings aside); none on stdout."""
    assert "error:" not in result.stdout, result.stdout
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_dead_peer_is_one_line_and_exit_2(tmp_path, corpus) -> None:
    result = _two_ranks(tmp_path, corpus, "exit")
    assert result.returncode == 2, result.stdout + result.stderr
    errors = _errors(result)
    assert len(errors) == 1 and errors[0].startswith("error: rank 0: lost a peer process"), result.stderr
    assert "Traceback" not in result.stderr


def test_a_stopped_peer_times_out_after_timeout_seconds(tmp_path, corpus) -> None:
    result = _two_ranks(tmp_path, corpus, "stop", "--timeout", "5")
    assert result.returncode == 2, result.stdout + result.stderr
    errors = _errors(result)
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: rank 0: timed out waiting for the other processes"), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "message, expected",
    [
        ("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:46284. This is typically ...",
         "rank 3: lost a peer process at 127.0.0.1:46284"),
        ("[../gloo/transport/tcp/pair.cc:537] Read error [10.0.0.2]:60126: Connection reset by peer",
         "rank 3: lost a peer process at 10.0.0.2:60126"),
        ("[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 3000ms for recv operation to complete",
         "rank 3: timed out waiting for the other processes"),
    ],
)
def test_process_group_errors_are_described_in_one_line(monkeypatch, message, expected) -> None:
    monkeypatch.setenv("RANK", "3")
    assert describe_failure(RuntimeError(message)).startswith(expected)
    assert describe_failure(RuntimeError("an ordinary bug")) is None


def test_timeout_is_checked_and_may_change_on_resume(tmp_path, corpus, capsys) -> None:
    run = tmp_path / "run"
    assert cli(["train", "--data", str(corpus), "--run-dir", str(run), *TINY, "--steps", "1", "--timeout", "0"]) == 2
    assert "--timeout must be a finite number > 0" in capsys.readouterr().err
    assert cli(["train", "--data", str(corpus), "--run-dir", str(run), *TINY, "--steps", "10"]) == 0
    assert cli(["train", "--resume", str(run), "--steps", "20", "--timeout", "60"]) == 0
    assert checkpoint.load(run)["config"]["timeout"] == 60
