"""The examples run, and say what they claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_tf_tutorial_runs_and_its_checks_hold() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "tf_tutorial.py")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "False" not in result.stdout, result.stdout
    assert result.stdout.count(": True") == 4
    losses = [float(line.split()[-1]) for line in result.stdout.splitlines() if "train step" in line]
    assert len(losses) >= 4 and losses[-1] < losses[0]


def test_port_tf1_model_loads_a_whole_model_and_matches_tensorflow() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "port_tf1_model.py")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "False" not in result.stdout, result.stdout
    assert result.stdout.count(": True") == 3 and "in one call" in result.stdout
