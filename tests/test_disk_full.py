"""A disk that fills up during training: a real 1.4 MB tmpfs holds the run, in a private mount namespace.

Each checkpoint of the tiny run below takes about 0.9 MB, so the first fits and the second does not. The
tmpfs vanishes with its namespace, so the shell that mounts it copies the run directory out for the checks.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TRAIN, error_lines, run_command

from rlik.training import checkpoints

RUN = [
    "total_timesteps=1200",
    "algo.learning_starts=100",
    "checkpoint.freq=400",
    "eval.freq=0",
    "eval.final_goals=2",
    "wandb.mode=disabled",
    "torch_threads=1",
]


def can_mount_tmpfs(where: Path) -> bool:
    """Whether this process may mount a tmpfs in a private mount namespace (root, or user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(where))}"],
        capture_output=True,
    )
    return probe.returncode == 0


def test_full_disk_during_a_checkpoint_is_one_line_and_leaves_the_older_checkpoint(tmp_path: Path) -> None:
    disk, copy = tmp_path / "disk", tmp_path / "copy"
    disk.mkdir()
    if not can_mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here (needs root or unprivileged user namespaces)")
    train = shlex.join([sys.executable, str(TRAIN), *RUN, f"hydra.run.dir={disk / 'run'}"])
    script = f"mount -t tmpfs -o size=1400k tmpfs {disk} && {train}; code=$?; cp -a {disk / 'run'} {copy}; exit $code"
    result = run_command(["unshare", "-m", "sh", "-c", script], tmp_path, timeout=300)

    assert result.returncode == 1, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert line.startswith("error: could not write ") and "step_000000000800 (No space left on device)" in line
    assert line.endswith(f"continue with: python train.py resume={disk / 'run'}")
    # The first checkpoint is whole and loads; the one cut short left nothing behind.
    saved = checkpoints.complete_checkpoints(copy / "checkpoints")
    assert [p.name for p in saved] == ["step_000000000400"]
    assert not list((copy / "checkpoints").glob(".tmp-*")) and not list(copy.glob(".tmp-*"))
    assert checkpoints.read_state(saved[0])["num_timesteps"] == 400
