"""Issue 5 acceptance: ``evaluate.py`` on a real tiny training run, real envs, real files."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from omegaconf import OmegaConf
from stable_baselines3 import DDPG
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from rlik.control import JacobianController
from rlik.evaluation.episodes import evaluate as evaluate_goals
from rlik.evaluation.episodes import policy_controller, summarise
from rlik.policy.export import OnnxPolicy
from rlik.policy.lean import LeanPolicy
from rlik.policy.loading import load_model, run_config
from rlik.training.factory import make_env
from tests.conftest import TINY, check_ok, error_lines, read_json, run_evaluate, run_train


@pytest.fixture(scope="module")
def run_dir(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the tiny training run, evaluated once with the Jacobian controller, plots and video."""
    copy = tmp_path_factory.mktemp("evaluate") / "run"
    shutil.copytree(tiny_run, copy)
    overrides = ["controller=jacobian", "n_episodes=2", "plots=true", "video=true", "video_episodes=2"]
    check_ok(run_evaluate(copy.parent, f"run={copy}", *overrides, "wandb.mode=disabled"))
    return copy


def test_jacobian_controller_reaches_planar_arm_goals() -> None:
    env = make_env(OmegaConf.create({"id": "PlanarArmReach-v0", "max_episode_steps": 50}))
    try:
        summary = summarise(evaluate_goals(env, JacobianController(env.unwrapped), 40, 1_000_003))
    finally:
        env.close()
    assert summary["success_rate"] >= 0.95, summary  # at the preset's 1 cm


def test_eval_json_agrees_with_a_hand_computed_episode(run_dir: Path) -> None:
    report = read_json(run_dir / "eval_jacobian.json")
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    env = make_env(config.env)
    controller = JacobianController(env.unwrapped)
    try:
        for row, seed in zip(report["episodes"], (config.eval.goal_seed, config.eval.goal_seed + 1)):
            _, info = env.reset(seed=seed)
            goal = env.unwrapped.task.goal.copy()
            returns, torques, successes, done = 0.0, [], [info["is_success"]], False
            while not done:
                action = controller()
                torques.append(np.abs(np.clip(action, -1, 1) * env.unwrapped.robot.torque_limits).mean())
                _, reward, terminated, truncated, info = env.step(action)
                returns += reward
                successes.append(info["is_success"])
                done = terminated or truncated
            assert row["seed"] == seed and row["goal"] == pytest.approx(goal.tolist())
            assert row["steps"] == len(torques) == config.env.max_episode_steps
            assert row["final_distance"] == pytest.approx(info["distance"], abs=1e-9)
            assert row["success"] == info["is_success"]
            assert row["episode_return"] == pytest.approx(returns, abs=1e-9)
            assert row["mean_abs_torque"] == pytest.approx(np.mean(torques), rel=1e-9)
            if successes[-1]:  # seconds until the start of the final unbroken run of successes
                start = max((i + 1 for i, ok in enumerate(successes) if not ok), default=0)
                assert row["time_to_reach"] == pytest.approx(start * env.unwrapped.dt)
            else:
                assert row["time_to_reach"] is None  # NaN in memory, null in standard JSON
    finally:
        env.close()
    finals = [row["final_distance"] for row in report["episodes"]]
    assert report["final_distance_mean"] == pytest.approx(np.mean(finals))
    assert report["success_rate"] == np.mean([row["success"] for row in report["episodes"]])
    assert report["n_episodes"] == 2 and report["controller"] == "jacobian" and report["fall_rate"] == 0.0
    assert report["control_time_us_mean"] > 0 and report["ik_time_us_mean"] > 0


def test_video_and_plots_are_not_trivial(run_dir: Path) -> None:
    frames = iio.imread(run_dir / "eval_jacobian.mp4")  # (n, h, w, 3)
    assert len(frames) >= 2 * 20 and np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 0.5
    for name in ("eval_jacobian_distance.png", "eval_jacobian_goals.png"):
        image = iio.imread(run_dir / name)[..., :3]
        assert image.shape[0] > 200 and image.std() > 10, name  # not a blank canvas


def test_policy_eval_keeps_the_jacobian_file_and_logs_to_the_run(run_dir: Path) -> None:
    before = sorted((run_dir / "wandb").glob("offline-run-*"))
    result = run_evaluate(run_dir.parent, f"run={run_dir}", "n_episodes=2", "model=latest", "wandb.mode=offline")
    check_ok(result)
    policy = read_json(run_dir / "eval_policy.json")
    assert policy["controller"] == "policy" and policy["checkpoint"].endswith("model.zip")
    # Evaluated with the lean actor; SB3's predict timed beside it on the same observations.
    assert policy["lean_action_max_difference"] < 1e-5 and policy["sb3_predict_time_us_mean"] > 0
    assert read_json(run_dir / "eval_jacobian.json")["controller"] == "jacobian"
    assert "policy" in result.stdout and "jacobian" in result.stdout  # the side-by-side table
    # The training run's wandb run, resumed by id.
    run_id = read_json(run_dir / "run.json")["wandb_run_id"]
    new = sorted(set((run_dir / "wandb").glob("offline-run-*")) - set(before))
    assert [p.name.rsplit("-", 1)[1] for p in new] == [run_id]


def test_one_table_for_a_list_of_controllers(run_dir: Path) -> None:
    result = run_evaluate(
        run_dir.parent, f"run={run_dir}", "controller=[policy,jacobian,fabrik]", "n_episodes=2", "wandb.mode=disabled"
    )
    check_ok(result)
    table = read_json(run_dir / "eval_table.json")
    assert list(table["controllers"]) == ["policy", "jacobian", "fabrik"] and table["goal_seed"] == 1_000_003
    assert table["controllers"]["fabrik"]["solve_time_us_mean"] > 0  # FABRIK's IK solve, timed
    assert table["controllers"]["policy"]["solve_time_us_mean"] is None  # a policy solves no IK
    with open(run_dir / "eval_table.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["controller"] for row in rows] == ["policy", "jacobian", "fabrik"]
    assert {row["success_rate"] for row in rows} <= {"0.0", "0.5", "1.0"}
    header = next(line for line in result.stdout.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "policy", "jacobian", "fabrik"]
    bad = run_evaluate(run_dir.parent, f"run={run_dir}", "controller=[policy,fabrick]", "wandb.mode=disabled")
    assert bad.returncode == 2 and "unknown controller 'fabrick'" in bad.stderr


def test_unwritable_results_and_corrupt_files_are_one_line(run_dir: Path, tmp_path: Path) -> None:
    """The table is printed before anything is written; a write that fails names its file. A corrupt earlier
    evaluation beside the run (issue 34) is one warning naming it, left out of the table: this one is saved."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    for earlier in copy.glob("eval_*.json"):  # other tests' evaluations of the shared run
        earlier.unlink()
    (copy / "eval_table.json").mkdir()  # unwritable (the tests run as root, for whom chmod does not bite)
    result = run_evaluate(tmp_path, f"run={copy}", "controller=jacobian", "n_episodes=2", "wandb.mode=disabled")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "success rate" in result.stdout  # the results were printed all the same
    (line,) = error_lines(result.stderr)
    assert f"cannot write {copy / 'eval_table.json'}" in line and "not saved" in line

    (copy / "eval_table.json").rmdir()
    (copy / "eval_jacobian.json").write_text('{"controller": "jacob')  # truncated, as by a full disk
    result = run_evaluate(tmp_path, f"run={copy}", "controller=policy", "n_episodes=2", "wandb.mode=disabled")
    check_ok(result)
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert line.startswith(f"warning: {copy / 'eval_jacobian.json'} is not valid JSON") and "Left out" in line
    assert read_json(copy / "eval_policy.json")["n_episodes"] == 2
    assert list(read_json(copy / "eval_table.json")["controllers"]) == ["policy"]


def test_export_writes_a_numpy_and_an_onnx_policy_that_act_like_the_model(run_dir: Path) -> None:
    result = run_evaluate(run_dir.parent, f"run={run_dir}", "export=true", "model=final", "wandb.mode=disabled")
    check_ok(result)
    differences = [
        float(line.split("predict ")[1].split()[0]) for line in result.stdout.splitlines() if "wrote" in line
    ]
    assert len(differences) == 2 and max(differences) < 1e-5, result.stdout
    policy = LeanPolicy.load(run_dir / "policy.npz")
    assert policy.metadata["source"].endswith("final_model.zip") and policy.metadata["env"]["id"] == "PlanarArmReach-v0"
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    env = make_env(config.env)
    try:
        observation, _ = env.reset(seed=3)
        model = DDPG.load(run_dir / "final_model.zip", env=DummyVecEnv([lambda: env]), device="cpu")
        expected = model.predict(observation, deterministic=True)[0]
    finally:
        env.close()
    np.testing.assert_allclose(policy.act(observation), expected, atol=1e-5)
    np.testing.assert_allclose(OnnxPolicy(run_dir / "policy.onnx").act(observation), expected, atol=1e-5)


def test_bad_input_is_one_line_and_exit_2(run_dir: Path, tmp_path: Path) -> None:
    result = run_evaluate(tmp_path, f"checkpoint={run_dir}/missing.zip", "wandb.mode=disabled")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert f"checkpoint {run_dir}/missing.zip does not exist" in line
    assert run_evaluate(tmp_path, "wandb.mode=disabled", "n_episodse=3").returncode != 0  # misspelled key


def test_clear_errors(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no .hydra/config.yaml"):
        run_config(tmp_path, OmegaConf.create({}))
    with pytest.raises(ValueError, match="env.succes_threshold is not a key"):
        run_config(run_dir, OmegaConf.create({"succes_threshold": 0.1}))
    config = run_config(run_dir, OmegaConf.create({"goal_conditioned": False}))
    env = make_env(config.env)
    try:
        with pytest.raises(ValueError, match="has observation_space Dict.* but the env"):
            load_model(run_dir / "best_model.zip", run_dir, config, env)
        broken = tmp_path / "broken.zip"
        broken.write_bytes((run_dir / "best_model.zip").read_bytes()[:500])
        with pytest.raises(ValueError, match="is unreadable"):
            load_model(broken, run_dir, config, env)
    finally:
        env.close()


def test_sweep_ranking(joblib_sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    sweep_dir, training = joblib_sweep
    check_ok(training)
    result = run_evaluate(sweep_dir.parent, f"sweep={sweep_dir}", "n_episodes=2", "wandb.mode=disabled")
    check_ok(result)
    with open(sweep_dir / "eval_policy_ranking.csv") as handle:
        header, *rows = list(csv.reader(handle))
    assert header[:4] == ["rank", "job", "wandb.name", "success_rate"] and len(rows) == 2  # only wandb.name differs
    assert sorted(row[2] for row in rows) == ["a", "b"] and [row[0] for row in rows] == ["1", "2"]
    assert "ranking of 2 jobs" in result.stdout
    for job in ("0", "1"):  # ranked by their final models, evaluate.py's default (issue 37)
        assert read_json(sweep_dir / job / "eval_policy.json")["checkpoint"] == str(sweep_dir / job / "final_model.zip")


@pytest.mark.parametrize("normalize_goals", [True, False])
def test_normalised_run_keeps_each_models_statistics_beside_it(tmp_path: Path, normalize_goals: bool) -> None:
    """best_model.zip is evaluated with the observation statistics it was trained with, not later ones;
    ``normalize_goals=false`` leaves HER's goals in metres."""
    run = tmp_path / "run"
    # Normalised goals are not in metres, which the planar preset's goal-error scales are.
    scales = () if not normalize_goals else ("algo.goal_error_scales=[]",)
    overrides = ("normalize_observations=true", f"normalize_goals={str(normalize_goals).lower()}", *scales)
    check_ok(run_train(tmp_path, *TINY, *overrides, f"hydra.run.dir={run}"))
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    env = make_env(config.env)
    venv = DummyVecEnv([lambda: env])
    try:
        final = VecNormalize.load(str(run / "final_model_vecnormalize.pkl"), venv)
        last_checkpoint = VecNormalize.load(str(run / "checkpoints" / "step_000000000200" / "vecnormalize.pkl"), venv)
        goals = {"achieved_goal", "desired_goal"} if normalize_goals else set()
        assert set(final.obs_rms) == {"observation"} | goals
        for key, statistics in final.obs_rms.items():
            np.testing.assert_array_equal(statistics.mean, last_checkpoint.obs_rms[key].mean)

        best = VecNormalize.load(str(run / "best_model_vecnormalize.pkl"), venv)
        model = DDPG.load(run / "best_model.zip", env=venv, device="cpu")
        controller = policy_controller(*load_model(run / "best_model.zip", run, config, env))
        observation, _ = env.reset(seed=1)
        expected = model.predict(best.normalize_obs(observation), deterministic=True)[0]
        np.testing.assert_allclose(controller(observation), expected, atol=1e-5)
    finally:
        env.close()
