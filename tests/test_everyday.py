"""Issue 37: the everyday tools on a real tiny run: one model default, learning curves, the evaluation table, video
and plots, watching a policy in PyBullet's GUI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.loading import load_policy
from tests.conftest import check_ok, read_json, run_evaluate


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny run."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def test_evaluate_and_load_policy_default_to_the_final_model(run_copy: Path) -> None:
    check_ok(run_evaluate(run_copy.parent, f"run={run_copy}", "n_episodes=1", "wandb.mode=disabled"))
    assert read_json(run_copy / "eval_policy.json")["checkpoint"] == str(run_copy / "final_model.zip")
    assert load_policy(run_copy).model_path == run_copy / "final_model.zip"


def test_sweep_jobs_prefix_their_console_lines(joblib_sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    """Two joblib jobs side by side print into one console: each line starts with its job number and swept values;
    each job's train.log has its own lines without the prefix."""
    sweep_dir, training = joblib_sweep
    check_ok(training)
    steps = [line for line in training.stdout.splitlines() if "[step " in line]
    for job, name in ((0, "a"), (1, "b")):
        prefix = f"[job {job} wandb.name={name}] "
        assert [line.split("] [step ")[1].split("]")[0] for line in steps if line.startswith(prefix)] == ["100", "200"]
        assert f"{prefix}run directory: {sweep_dir / str(job)}" in training.stdout
        log = (sweep_dir / str(job) / "train.log").read_text()
        assert "[step 200] eval/" in log and "[job " not in log
    assert len(steps) == 4
