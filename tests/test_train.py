"""Issue 4 acceptance: ``train.py`` end to end with real Hydra, SB3 and offline wandb, tiny budgets."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from stable_baselines3 import DDPG
from stable_baselines3.common.save_util import load_from_zip_file

from rlik.training import checkpoints
from rlik.training.factory import make_env
from tests.conftest import (
    TINY,
    check_ok,
    error_lines,
    offline_run_dirs,
    read_json,
    run_train,
    run_train_many,
    wandb_history,
    wandb_records,
    wandb_summary,
)

STEPS = 200  # total_timesteps of TINY


def step_dirs(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_tiny_run_writes_every_artefact(tiny_run: Path) -> None:
    config = OmegaConf.load(tiny_run / ".hydra" / "config.yaml")
    assert config.total_timesteps == STEPS and config.env.id == "PlanarArmReach-v0" and config.algo.name == "ddpg"
    # checkpoint.freq=100: checkpoints at 100 and 200 (keep=2), each complete, with its step.
    assert step_dirs(tiny_run) == ["step_000000000100", "step_000000000200"]
    for step in (100, 200):
        checkpoint = tiny_run / "checkpoints" / f"step_{step:012d}"
        assert {p.name for p in checkpoint.iterdir()} == {"model.zip", "replay_buffer.pkl", "state.json"}
        assert checkpoints.is_complete(checkpoint)
        assert checkpoints.read_state(checkpoint)["num_timesteps"] == step
    for name in ("best_model.zip", "final_model.zip", "video.mp4", "progress.csv"):
        assert (tiny_run / name).stat().st_size > 0, name
    metrics = read_json(tiny_run / "metrics.json")
    assert 0.0 <= metrics["success_rate"] <= 1.0
    assert metrics["num_timesteps"] == STEPS and metrics["n_episodes"] == 3 and len(metrics["episodes"]) == 3
    assert all(episode["steps"] == 25 for episode in metrics["episodes"])  # env.max_episode_steps=25
    assert metrics["torch_threads"] == len(os.sched_getaffinity(0))  # torch_threads=null, a run alone: all cores
    run_id = read_json(tiny_run / "run.json")["wandb_run_id"]
    assert [p.name.rsplit("-", 1)[1] for p in offline_run_dirs(tiny_run)] == [run_id]
    assert not list((tiny_run / "checkpoints").glob(".tmp-*")) and not list(tiny_run.glob(".tmp-*"))


def test_saved_models_reload_and_act(tiny_run: Path) -> None:
    config = OmegaConf.load(tiny_run / ".hydra" / "config.yaml")
    env = make_env(config.env)
    try:
        for name in ("final_model.zip", "best_model.zip", "checkpoints/step_000000000200/model.zip"):
            model = DDPG.load(tiny_run / name, env=env, device="cpu")
            assert model.num_timesteps in (100, 200)
            observation, _ = env.reset(seed=7)
            for _ in range(5):
                action, _ = model.predict(observation, deterministic=True)
                assert action.shape == (2,) and np.all(np.abs(action) <= 1.0)
                observation, reward, _, _, info = env.step(action)
                assert np.isfinite(reward) and not info["unstable"]
        # The final model and checkpoint step 200 are the same weights: identical deterministic actions.
        final = DDPG.load(tiny_run / "final_model.zip", env=env, device="cpu")
        last = DDPG.load(tiny_run / "checkpoints/step_000000000200/model.zip", env=env, device="cpu")
        observation, _ = env.reset(seed=3)
        np.testing.assert_array_equal(final.predict(observation, True)[0], last.predict(observation, True)[0])
    finally:
        env.close()


def test_offline_wandb_files_hold_the_metrics(tiny_run: Path) -> None:
    metrics = read_json(tiny_run / "metrics.json")
    (offline,) = offline_run_dirs(tiny_run)
    summary = wandb_summary(offline)
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    assert summary["run_id"] == read_json(tiny_run / "run.json")["wandb_run_id"]
    for key in ("success_rate", "final_distance_mean", "final_distance_p95", "mean_abs_torque", "num_timesteps"):
        assert summary["summary"][f"final/{key}"] == pytest.approx(metrics[key], rel=1e-12), key
    assert summary["config"]["total_timesteps"] == STEPS
    # Periodic evaluations at steps 100 and 200, keyed by env steps.
    evaluations = [row for row in wandb_history(offline) if "eval/success_rate" in row]
    assert [row["global_step"] for row in evaluations] == [100, 200]


def test_resume_continues_step_count_history_clock_and_wandb_run(tiny_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    run_id = read_json(run_dir / "run.json")["wandb_run_id"]
    # Stopped after the checkpoint at 100: what it logged after that is logged again, not twice.
    shutil.rmtree(run_dir / "checkpoints" / "step_000000000200")
    learn_seconds_at_100 = checkpoints.read_state(run_dir / "checkpoints" / "step_000000000100")["learn_seconds"]
    # A run of an older checkout, before the normalize_goals and algo.learning_rate_final keys, still resumes.
    saved_config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    del saved_config["normalize_goals"], saved_config.algo["learning_rate_final"]
    OmegaConf.save(saved_config, run_dir / ".hydra" / "config.yaml")
    # The networks are fixed when a run starts: changing them on resume fails in one line, touching nothing.
    refused = run_train(tmp_path, f"resume={run_dir}", "total_timesteps=400", "algo.net_arch=[8,8]")
    assert refused.returncode == 2 and error_lines(refused.stderr) == [
        "error: algo.net_arch cannot change when a run resumes; drop it from the command or start a new run "
        "(resumable: learning_rate, learning_rate_final, learning_rate_decay_start, batch_size, gradient_steps, train_freq, learning_starts, gamma, tau, actor_average_start)."
    ]
    assert step_dirs(run_dir) == ["step_000000000100"]
    # A hyperparameter SB3 reads at each update may change, e.g. to fine-tune at a lower, decaying rate.
    lr_changes = ["algo.learning_rate=0.0005", "algo.learning_rate_final=0.0001", "algo.learning_rate_decay_start=0.5"]
    result = run_train(tmp_path, f"resume={run_dir}", "total_timesteps=400", *lr_changes)
    check_ok(result)
    checkpoint_100 = run_dir / "checkpoints" / "step_000000000100"
    assert f"resumed from {checkpoint_100} at step 100, {', '.join(lr_changes)}" in result.stdout
    rates = [float(v) for v in read_csv_column(run_dir / "progress.csv", "train/learning_rate")]
    assert 0.0001 <= rates[-1] < 0.0005  # decaying over the second half of the 400 steps
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["num_timesteps"] == 400 and metrics["learn_seconds"] > learn_seconds_at_100
    assert step_dirs(run_dir) == ["step_000000000300", "step_000000000400"]
    assert [checkpoints.read_state(p)["wandb_run_id"] for p in (run_dir / "checkpoints").iterdir()] == [run_id] * 2
    assert read_json(run_dir / "run.json")["wandb_run_id"] == run_id
    # progress.csv holds the whole history once, on one clock.
    steps = [int(float(v)) for v in read_csv_column(run_dir / "progress.csv", "eval/env_steps")]
    seconds = [float(v) for v in read_csv_column(run_dir / "progress.csv", "eval/wall_seconds")]
    assert steps == [100, 200, 300, 400] and seconds == sorted(seconds) and seconds[0] < learn_seconds_at_100
    offline = offline_run_dirs(run_dir)
    assert len(offline) == 2 and {p.name.rsplit("-", 1)[1] for p in offline} == {run_id}
    assert wandb_summary(offline[-1])["summary"]["final/num_timesteps"] == 400
    # The resumed segment charts against env steps too, from where its checkpoint was.
    assert {"name": "global_step", "options": {"defined": True}} in wandb_records(offline[-1], "metric")
    assert min(row["global_step"] for row in wandb_history(offline[-1])) > 100
    # The run keeps its original config; the resume's own Hydra files go to .hydra_resume/.
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").total_timesteps == STEPS
    assert (run_dir / ".hydra_resume" / "overrides.yaml").exists()
    assert not (tmp_path / "outputs").exists()


def test_joblib_multirun_finishes(joblib_sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    sweep_dir, result = joblib_sweep
    check_ok(result)
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    groups = set()
    for job, name in zip(jobs, "ab", strict=True):
        assert f"wandb.name={name}" in OmegaConf.load(job / ".hydra" / "overrides.yaml")
        metrics = read_json(job / "metrics.json")
        assert metrics["num_timesteps"] == STEPS
        assert metrics["torch_threads"] == max(1, len(os.sched_getaffinity(0)) // 2)  # n_jobs=2 share the cores
        assert (job / "final_model.zip").exists() and len(step_dirs(job)) == 2
        (offline,) = offline_run_dirs(job)
        groups.add(read_json(job / "run.json")["wandb_group"])
        summary = wandb_summary(offline)
        assert summary["summary"]["final/num_timesteps"] == STEPS
        assert summary["config"]["swept"] == {"wandb.name": name}  # the swept key alone, not TINY's fixed ones
    assert groups == {f"sweep-{sweep_dir.name}"}  # one wandb group per sweep
    assert not (sweep_dir / "failed_jobs.txt").exists()


def test_submitit_local_multirun_finishes(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    overrides = [o for o in TINY if not o.startswith(("eval.freq", "wandb.video"))]
    result = run_train(
        tmp_path,
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        *overrides,
        "eval.freq=0",
        "wandb.video_episodes=0",
        "seed=0,1",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${hydra.job.num}",
    )
    check_ok(result)
    metrics = [read_json(sweep_dir / str(n) / "metrics.json") for n in (0, 1)]
    assert [m["num_timesteps"] for m in metrics] == [STEPS, STEPS]
    assert metrics[0]["episodes"] != metrics[1]["episodes"]  # different seeds, different policies


def test_misspelled_override_fails_without_run_dir(tmp_path: Path) -> None:
    result = run_train(tmp_path, "total_timestep=200", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    (line,) = error_lines(result.stderr)
    assert line.startswith("error: Could not override 'total_timestep'. Key 'total_timestep' not in 'TrainConfig'")
    assert list(tmp_path.iterdir()) == []


def test_optuna_sweeper_config_runs_a_study(tmp_path: Path) -> None:
    """``hydra/sweeper=planar_arm_optuna`` maximises the returned success rate over the five knobs."""
    sweep_dir = tmp_path / "sweep"
    # (A key given on the command line is fixed, not searched: no algo.batch_size here.)
    overrides = [o for o in TINY if not o.startswith(("eval.freq", "wandb.video", "algo.batch_size"))]
    result = run_train(
        tmp_path,
        "-m",
        "hydra/sweeper=planar_arm_optuna",
        "hydra.sweeper.n_trials=2",
        *overrides,
        "eval.freq=0",
        "wandb.video_episodes=0",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${hydra.job.num}",
    )
    check_ok(result)
    study = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert study.name == "optuna"
    assert set(study.best_params) == {
        "algo.learning_rate",
        "algo.gamma",
        "algo.tau",
        "algo.action_noise.sigma",
        "algo.batch_size",
    }
    trials = [read_json(sweep_dir / str(n) / "metrics.json") for n in (0, 1)]
    assert study.best_value == max(t["success_rate"] for t in trials)
    for n in (0, 1):
        config = OmegaConf.load(sweep_dir / str(n) / ".hydra" / "config.yaml")
        assert 1e-4 <= config.algo.learning_rate <= 3e-3 and 0.9 <= config.algo.gamma <= 0.99
        assert 0.005 <= config.algo.tau <= 0.1 and 0.05 <= config.algo.action_noise.sigma <= 0.4
        assert config.algo.batch_size in (64, 128, 256, 512)
        # The wandb config carries the values the sweeper chose for this trial.
        swept = wandb_summary(offline_run_dirs(sweep_dir / str(n))[0])["config"]["swept"]
        assert swept == {key: OmegaConf.select(config, key) for key in study.best_params}


def test_launcher_configs_compose(tmp_path: Path) -> None:
    """The SLURM and local-parallel launcher presets and the Optuna preset compose (no cluster needed)."""
    presets = {
        "hydra/launcher=slurm": ["SlurmLauncher", "cpus_per_task: 2", "timeout_min: 180"],
        "hydra/launcher=local_parallel": ["JoblibLauncher", "n_jobs: 2"],
        "hydra/sweeper=planar_arm_optuna": ["OptunaSweeper", "direction: maximize", "n_jobs: 1"],
    }
    cases = []
    for n, preset in enumerate(presets):
        (tmp_path / str(n)).mkdir()
        cases.append((tmp_path / str(n), [preset, "--cfg", "hydra"]))
    for (preset, fragments), result in zip(presets.items(), run_train_many(cases), strict=True):
        check_ok(result)
        for fragment in fragments:
            assert fragment in result.stdout, (preset, fragment)


def test_goal_curriculum_widens_and_resumes(tmp_path: Path) -> None:
    """Promotions every 2 episodes (threshold 0): goal_range 0.2 -> 0.5 -> 0.8, then 1.0 after a resume."""
    run_dir = tmp_path / "run"
    curriculum = [
        "curriculum.enabled=true",
        "curriculum.start=0.2",
        "curriculum.increment=0.3",
        "curriculum.success_threshold=0.0",
        "curriculum.min_episodes=2",
    ]
    check_ok(run_train(tmp_path, *TINY, *curriculum, "total_timesteps=100", f"hydra.run.dir={run_dir}"))
    ranges = [float(v) for v in read_csv_column(run_dir / "progress.csv", "curriculum/goal_range")]
    assert ranges and ranges == sorted(ranges) and 0.2 < ranges[-1] <= 0.8  # logged, so W&B plots it
    saved = checkpoints.read_state(run_dir / "checkpoints" / "step_000000000100")["goal_range"]
    assert saved == pytest.approx(0.8)  # 4 episodes of 25 steps: two promotions
    # Resumed at 0.8, not restarted at 0.2: two more promotions reach 1.0 (from 0.2 they would reach 0.8).
    check_ok(run_train(tmp_path, f"resume={run_dir}", "total_timesteps=200"))
    assert checkpoints.read_state(run_dir / "checkpoints" / "step_000000000200")["goal_range"] == pytest.approx(1.0)


def test_final_model_is_the_actor_average_and_a_resume_continues_it(tmp_path: Path) -> None:
    """``algo.actor_average_start=0.5`` of 200 steps: the final model is the mean of the actors after the
    updates at steps 100 to 200 (one env, one update per step); checkpoints keep the last actor."""
    run_dir = tmp_path / "run"
    averaging = ["algo.actor_average_start=0.5", "wandb.mode=disabled", "wandb.video_episodes=0"]
    result = run_train(tmp_path, *TINY, *averaging, f"hydra.run.dir={run_dir}")
    check_ok(result)
    assert "final model: the mean of 101 actors from step 100 on" in result.stdout
    assert read_json(run_dir / "metrics.json")["averaged_actors"] == 101

    def actor_weights(model_zip: Path) -> dict[str, torch.Tensor]:
        policy = load_from_zip_file(model_zip, device="cpu")[1]["policy"]
        return {name.removeprefix("actor."): value for name, value in policy.items() if name.startswith("actor.")}

    def saved_average(step: int) -> dict:
        return torch.load(run_dir / "checkpoints" / f"step_{step:012d}" / checkpoints.AVERAGE_FILE)

    # At step 100 the mean holds one actor: the checkpoint's own.
    first = saved_average(100)
    assert (first["first_step"], first["count"]) == (100, 1)
    torch.testing.assert_close(
        first["mean"], actor_weights(run_dir / "checkpoints" / "step_000000000100" / "model.zip")
    )
    # The final model is the mean; the last checkpoint keeps the last actor, which differs from it.
    final, last = (
        actor_weights(run_dir / "final_model.zip"),
        actor_weights(run_dir / "checkpoints" / "step_000000000200" / "model.zip"),
    )
    torch.testing.assert_close(final, saved_average(200)["mean"])
    assert not torch.allclose(final["mu.0.weight"], last["mu.0.weight"])
    # Stopped after the checkpoint at 100: the resume continues that mean (from scratch it would start at 101).
    shutil.rmtree(run_dir / "checkpoints" / "step_000000000200")
    check_ok(run_train(tmp_path, f"resume={run_dir}"))
    resumed = saved_average(200)
    assert (resumed["first_step"], resumed["count"]) == (100, 101)
    torch.testing.assert_close(actor_weights(run_dir / "final_model.zip"), resumed["mean"])


def read_csv_column(path: Path, column: str) -> list[str]:
    """Non-empty cells of one column of an SB3 progress.csv."""
    with open(path, newline="") as handle:
        return [row[column] for row in csv.DictReader(handle) if row.get(column)]
