"""Issue 37: the everyday tools on a real tiny run: one model default, learning curves, the evaluation table, video
and plots, watching a policy in PyBullet's GUI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import matplotlib.pyplot as plt
import pytest
from omegaconf import OmegaConf

from pipeline.loading import load_policy
from pipeline.plot import PNG_NAME, configurations, find_runs, learning_figure, load_run
from tests.conftest import check_ok, error_lines, read_json, run_command, run_evaluate


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


def plot_command(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m pipeline.plot <args>`` (the ``rlik-plot`` console script) in ``cwd``."""
    return run_command([sys.executable, "-m", "pipeline.plot", *args], cwd)


def test_plot_draws_one_curve_per_configuration(
    tiny_run: Path, joblib_sweep: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    """rlik-plot on one run, on a sweep (two configurations: its jobs differ in wandb.name) and on two seeds of one
    configuration (copies of the tiny run, one with seed=1): the PNG where it belongs, its path printed, one curve per
    configuration, the seeds pooled into one mean with its interval as a band."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    sweep = tmp_path / "sweep"
    shutil.copytree(joblib_sweep[0], sweep)
    pooled = tmp_path / "pooled"
    for seed in (0, 1):
        shutil.copytree(tiny_run, pooled / f"seed{seed}")
        config = OmegaConf.load(pooled / f"seed{seed}" / ".hydra" / "config.yaml")
        config.seed = seed
        OmegaConf.save(config, pooled / f"seed{seed}" / ".hydra" / "config.yaml")
    cases = [
        ([run], run / PNG_NAME, ["PlanarArmReach-v0 ddpg (seed 0)"]),
        ([sweep], sweep / PNG_NAME, ["wandb.name=a (seed 0)", "wandb.name=b (seed 0)"]),
        ([pooled / "seed0", pooled / "seed1"], pooled / PNG_NAME, ["PlanarArmReach-v0 ddpg (seeds 0, 1)"]),
    ]
    for dirs, png, labels in cases:
        result = plot_command(tmp_path, *map(str, dirs))
        check_ok(result)
        assert result.stdout.startswith(f"wrote {png}: {len(labels)} curve"), result.stdout
        image = iio.imread(png)
        assert image.shape[0] > 400 and image[..., :3].std() > 10  # two panels drawn, not a blank canvas
        runs = [load_run(path) for path in find_runs(dirs)]
        figure = learning_figure(configurations(runs), "test")
        for axes in figure.axes:  # success, then median distance: one line per configuration
            assert axes.get_legend_handles_labels()[1] == labels or axes is not figure.axes[0]
            assert len(axes.get_lines()) == len(labels)
            assert len(axes.collections) == (1 if "seeds" in labels[0] else 0)  # a band only over several seeds
        plt.close(figure)


def test_plot_bad_input_is_one_line(tmp_path: Path) -> None:
    for args in ([str(tmp_path / "missing")], [str(tmp_path)], []):
        result = plot_command(tmp_path, *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        (line,) = error_lines(result.stderr)
        assert "; " in line


def test_evaluation_table_shows_dashes_the_ik_reference_apart_and_the_files_written(run_copy: Path) -> None:
    """No ``nan`` in the table (a dash: no time to reach without a goal reached); the PyBullet IK solve time is a
    reference line under the table, not a row under the policy; one line lists the files written (plots and the
    comparison figure included)."""
    overrides = ["controller=[policy,jacobian]", "n_episodes=2", "plots=true", "wandb.mode=disabled"]
    result = run_evaluate(run_copy.parent, f"run={run_copy}", *overrides)
    check_ok(result)
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    table = lines[start : next(i for i in range(start, len(lines)) if not lines[i].strip() or "reference" in lines[i])]
    assert table[0].split() == ["metric", "policy", "jacobian"] and len(table) > 5
    assert not any("nan" in line.lower() for line in table), table
    assert not any("IK solve" in line for line in table)  # no controller above uses PyBullet's IK
    if read_json(run_copy / "eval_policy.json")["success_rate"] == 0:  # the tiny policy reaches nothing
        (reach,) = [line for line in table if line.startswith("time to reach mean")]
        assert reach.split()[5] == "-", reach
    (reference,) = [line for line in lines if line.startswith("for reference, one PyBullet IK solve")]
    assert float(reference.split(": ")[1].split()[0]) == pytest.approx(
        read_json(run_copy / "eval_table.json")["ik_time_us_mean"], abs=0.5
    )
    (wrote,) = [line for line in lines if line.startswith(f"wrote in {run_copy}: ")]
    names = wrote.split(": ", 1)[1].split(", ")
    assert names[:4] == ["eval_policy.json", "eval_jacobian.json", "eval_table.json", "eval_table.csv"]
    assert {"eval_policy_goals.png", "eval_jacobian_distance.png", "eval_comparison.png"} <= set(names)
    assert all((run_copy / name).is_file() for name in names)
