"""Issue 37: the everyday tools on a real tiny run: one model default, learning curves, the evaluation table, video
and plots, watching a policy in PyBullet's GUI."""

from __future__ import annotations

import shutil
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
