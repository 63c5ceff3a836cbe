"""Issue 37: the everyday tools on a real tiny run: one model default, learning curves, the evaluation table, video
and plots, watching a policy in PyBullet's GUI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import matplotlib.pyplot as plt
import numpy as np
import pybullet
import pytest
from omegaconf import OmegaConf

from rlik.control import JacobianController
from rlik.evaluation import episodes as evaluation
from rlik.evaluation.config import EvaluateConfig, validate_evaluate_config
from rlik.evaluation.episodes import EpisodeResult, record_episodes
from rlik.evaluation.learning_curves import PNG_NAME, configurations, find_runs, learning_figure, load_run
from rlik.evaluation.watch import parse_goals, watch
from rlik.policy.loading import load_policy
from rlik.training.factory import make_env
from tests.conftest import EVALUATE, check_ok, error_lines, read_json, run_command, run_evaluate


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
    """``python -m rlik.evaluation.learning_curves <args>`` (the ``rlik-plot`` console script) in ``cwd``."""
    return run_command([sys.executable, "-m", "rlik.evaluation.learning_curves", *args], cwd)


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
    comparison figure included); each eval file says its seconds per step."""
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
    env = make_env(OmegaConf.load(run_copy / ".hydra" / "config.yaml").env)
    assert read_json(run_copy / "eval_jacobian.json")["dt"] == env.unwrapped.dt  # seconds per step of "distances"
    env.close()


def test_video_shows_the_floor_the_goal_and_an_overlay(tmp_path: Path) -> None:
    """A Jacobian episode on the planar arm filmed as evaluate.py films it: the arm stands on a floor (the frame's
    lower half is not the white void it was), the goal is a green ball, and the top-left corner holds the step,
    distance and success text on a dark box, which changes as the episode goes."""
    env = make_env(OmegaConf.create({"id": "PlanarArmReach-v0", "max_episode_steps": 40}), render_mode="rgb_array")
    try:
        path = record_episodes(env, JacobianController(env.unwrapped), [7], tmp_path / "episode.mp4")
    finally:
        env.close()
    frames = iio.imread(path).astype(int)  # (40, h, w, 3), lossy mp4: colours within a few units
    first, last = frames[0], frames[-1]
    lower = last[last.shape[0] // 2 :]
    assert (lower.min(axis=-1) > 235).mean() < 0.7  # floor tiles, not only white
    red, green, blue = last[..., 0], last[..., 1], last[..., 2]
    assert ((green > 170) & (red < 110) & (blue < 130)).sum() >= 10  # the goal marker
    corner = last[:50, :150]
    assert (corner.max(axis=-1) < 110).mean() > 0.4 and (corner.min(axis=-1) > 200).sum() > 50  # dark box, white text
    assert np.abs(first[:50, :150] - corner).mean() > 3  # the text follows the episode


def test_plots_mark_success_and_miss_the_base_and_compare_controllers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The goals plot: a dot per reached goal, a cross per missed one, the robot base as a square, in each view; the
    comparison figure: one median line (with its band) and one success line per controller."""
    figures = []
    monkeypatch.setattr(evaluation, "_save", lambda figure, path: figures.append(figure) or Path(path))
    results = [
        EpisodeResult(seed=i, goal=[0.1 * i, 0.2, 0.1 + 0.05 * i], success=i < 2, final_distance=[0.005, 0.008, 0.3][i],
                      time_to_reach=0.1, fell=False, unstable=False, episode_return=-1.0, mean_abs_torque=0.1,
                      steps=3, distances=[0.4, 0.1, [0.005, 0.008, 0.3][i]])
        for i in range(3)
    ]  # fmt: skip
    evaluation.plot_goals(results, 0.01, np.array([0.0, 0.0, 0.1]), tmp_path / "goals.png")
    goals_figure = figures.pop()
    views = [axes for axes in goals_figure.axes if axes.get_label() != "<colorbar>"]
    assert len(views) == 2  # top view x-y, side view x-z (the goals are not in one horizontal plane)
    for axes in views:
        assert [len(c.get_offsets()) for c in axes.collections] == [2, 1, 1]  # success, miss, base
    labels = views[0].get_legend_handles_labels()[1]
    assert labels == ["success (2)", "miss (1)", "robot base"]
    distances = {"policy": [r.distances for r in results], "jacobian": [[0.4, 0.005], [0.3, 0.2, 0.009]]}
    evaluation.plot_comparison(distances, 0.1, 0.01, tmp_path / "comparison.png")
    error_axes, success_axes = figures.pop().axes
    assert [line.get_label() for line in error_axes.get_lines()] == ["policy", "jacobian", "success threshold 0.01 m"]
    assert len(error_axes.collections) == 2  # an interquartile band per controller
    assert [line.get_label() for line in success_axes.get_lines()] == ["policy", "jacobian"]
    assert list(success_axes.get_lines()[1].get_ydata()) == [0.0, 0.5, 1.0]  # the shorter episode held at its end


def test_watch_settings_are_checked() -> None:
    """watch_goals: one goal or a list of them, each x, y, z per end effector; the keys belong to watch=true."""
    assert [list(goal) for goal in parse_goals([0.3, 0.2, 0.1], 3)] == [[0.3, 0.2, 0.1]]
    assert len(parse_goals([[0.3, 0.2, 0.1, 0.1, 0.2, 0.3]] * 2, 6)) == 2
    for bad in ([[0.3, 0.2]], [[0.3, 0.2, "x"]], [], [[0.3, 0.2, float("nan")]]):
        with pytest.raises(ValueError, match=r"^watch_goals=.*e\.g\. watch_goals=\[\[0\.3,0\.3,0\.3\]\]"):
            parse_goals(bad, 3)
    cfg = OmegaConf.structured(EvaluateConfig(run="run"))
    validate_evaluate_config(cfg)
    for key, value, message in [
        ("watch_goals", [[0.3, 0.2, 0.1]], "add watch=true"),
        ("watch_speed", 0.0, "watch_speed > 0"),
        ("export", True, "without sweep="),
    ]:
        bad = cfg.copy()
        bad.watch = key != "watch_goals"
        bad[key] = value
        with pytest.raises(ValueError, match=message):
            validate_evaluate_config(bad)


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="macOS and Windows always have a display")
def test_watch_without_a_display_is_one_line(run_copy: Path) -> None:
    result = run_command([sys.executable, str(EVALUATE), f"run={run_copy}", "watch=true"], run_copy, DISPLAY="")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = error_lines(result.stderr)
    assert "no display ($DISPLAY is unset)" in line and f"python evaluate.py run={run_copy} video=true" in line


@pytest.mark.skipif(
    shutil.which("xvfb-run") is None,
    reason="xvfb-run is absent (Debian/Ubuntu: apt-get install xvfb); .ci/run installs it",
)
def test_watch_opens_pybullet_window_under_a_virtual_display(run_copy: Path) -> None:
    """rlik-enjoy (evaluate.py watch=true) in PyBullet's GUI under Xvfb: the policy, then the Jacobian controller, on
    a chosen goal, one line per episode; then random goals from a printed seed."""
    enjoy = "import sys; from rlik.evaluate import enjoy; sys.argv[0] = 'rlik-enjoy'; enjoy()"
    fast = ["env.max_episode_steps=4", "watch_speed=100"]
    chosen = ["controller=[policy,jacobian]", "watch_goals=[0.3,0.2,0.1]"]
    result = run_command(
        ["xvfb-run", "-a", sys.executable, "-c", enjoy, f"run={run_copy}", *chosen, *fast], run_copy, timeout=600
    )
    check_ok(result)
    assert f"{run_copy}: PlanarArmReach-v0, policy, jacobian on the goals of watch_goals" in result.stdout
    episodes = [line for line in result.stdout.splitlines() if " m reached, " in line or " m missed, " in line]
    assert [line.split(": goal ")[0] for line in episodes] == ["policy 1/1", "jacobian 1/1"], result.stdout
    assert all("goal (0.300, 0.200, 0.100) m" in line and line.endswith("after 4 steps") for line in episodes)
    result = run_command(["xvfb-run", "-a", sys.executable, str(EVALUATE), f"run={run_copy}", "watch=true",
                          "controller=jacobian", "watch_episodes=2", *fast], run_copy, timeout=600)  # fmt: skip
    check_ok(result)
    seed = int(result.stdout.split("random goals from goal_seed=")[1].split(",")[0])
    episodes = [line for line in result.stdout.splitlines() if line.startswith("jacobian ")]
    assert [line.split(": goal ")[0] for line in episodes] == ["jacobian 1/2", "jacobian 2/2"], result.stdout
    env = make_env(OmegaConf.load(run_copy / ".hydra" / "config.yaml").env)
    env.reset(seed=seed)  # the first goal is the one evaluate.py goal_seed=<seed> starts with
    assert f"goal ({', '.join(f'{x:.3f}' for x in env.unwrapped.task.goal)}) m" in episodes[0]
    env.close()


@pytest.mark.parametrize(
    "env_config",
    [
        {"id": "PlanarArmReach-v0", "max_episode_steps": 50},
        {
            "id": "ArmReach-v0",
            "max_episode_steps": 50,
            "urdf": "kuka_iiwa/model.urdf",
            "end_effector": "lbr_iiwa_link_7",
        },
    ],
)
def test_the_floor_of_a_rendered_arm_changes_nothing(env_config: dict[str, Any]) -> None:
    """The floor shown under a rendered fixed-base arm is only seen: the same seed and actions give the same
    observations rendered or not."""
    observations = []
    for render_mode in (None, "rgb_array"):
        env = make_env(OmegaConf.create(env_config), render_mode=render_mode)
        try:
            steps = [env.reset(seed=3)[0]]
            actions = np.random.default_rng(0).uniform(-1, 1, (30, *env.action_space.shape))
            steps += [env.step(action)[0] for action in actions]
        finally:
            env.close()
        observations.append(np.array(steps))
    np.testing.assert_array_equal(*observations)


def test_watch_stops_in_one_line_when_the_window_is_closed(capsys: pytest.CaptureFixture[str]) -> None:
    """The user closes PyBullet's window mid-episode (here: its physics server disconnected, the env still open):
    ``watch`` stops with one line instead of PyBullet's "Not connected to physics server"."""
    env = make_env(OmegaConf.create({"id": "PlanarArmReach-v0", "max_episode_steps": 10}))
    client = env.unwrapped.session.client
    calls = []

    def controller(observation: np.ndarray) -> np.ndarray:
        calls.append(observation)
        if len(calls) == 3:
            pybullet.disconnect(physicsClientId=client._client)  # as the window's close button does
        return np.zeros(2)

    try:
        assert watch(env, {"policy": controller}, [None, None], seed=0, speed=1000.0) == 0
    finally:
        env.close()
    assert capsys.readouterr().out == "the window was closed: stopped after 0 episodes.\n"
