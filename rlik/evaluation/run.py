"""One training run's controllers on its env, rebuilt from the run's .hydra/config.yaml: evaluated on held-out goals
(``evaluate_run``), its model exported (``export_run``) or shown in PyBullet's window (``watch_run``)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from rlik.control import (
    BalancedJacobianController,
    FabrikController,
    JacobianController,
    PyBulletIKController,
    inverse_kinematics_time_us,
)
from rlik.envs.session import display_available
from rlik.evaluation.config import controller_names
from rlik.evaluation.episodes import (
    Controller,
    episode_rows,
    evaluate,
    plot_comparison,
    plot_distances,
    plot_goals,
    policy_controller,
    predict_controller,
    record_episodes,
    summarise,
)
from rlik.evaluation.report import (
    REFERENCE_IK_TIME,
    REPORT_CONTEXT,
    comparison_table,
    format_table,
    save_evaluation,
    table_rows,
)
from rlik.evaluation.tracking import log_to_wandb
from rlik.evaluation.watch import parse_goals, watch
from rlik.ops.cli import exit_bad_input
from rlik.paths import RunDir
from rlik.policy.export import OnnxPolicy, lean_policy, save_onnx
from rlik.policy.lean import LeanPolicy, stack_observations
from rlik.policy.loading import load_model, model_file, run_config
from rlik.training.factory import make_env

# Classical controllers (the names of rlik/evaluation/config.py's CONTROLLERS but "policy"): name -> (class in
# rlik/control/, the config node of its gains).
CLASSICAL = {
    "jacobian": (JacobianController, "jacobian"),
    "fabrik": (FabrikController, "fabrik"),
    "jacobian_balance": (BalancedJacobianController, "jacobian_balance"),
    "pybullet_ik": (PyBulletIKController, "pybullet_ik"),
}


def run_dir_of(checkpoint: Path) -> Path:
    """The training run directory holding ``checkpoint`` (the nearest parent with .hydra/config.yaml).

    :param checkpoint: a model zip (``checkpoint=``) inside a run directory.
    """
    for parent in checkpoint.resolve().parents:
        if RunDir(parent).is_run():
            return parent
    raise FileNotFoundError(
        f"checkpoint={checkpoint}: no run directory (.hydra/config.yaml) above it; add run=<its training run dir>."
    )


def model_path(cfg: DictConfig, run_dir: Path) -> Path:
    """The zip to evaluate: ``checkpoint=``, else the run's best, final or latest model.

    :param cfg: the composed ``EvaluateConfig`` (conf/evaluate.yaml).
    :param run_dir: the training run directory (.hydra/config.yaml inside).
    """
    return Path(cfg.checkpoint) if cfg.checkpoint else model_file(run_dir, cfg.model)


class ObservationSample:
    """A controller that also keeps the first ``size`` observations it is given, to replay them later.

    :param controller: the controller that acts.
    :param size: how many observations to keep.
    """

    def __init__(self, controller: Controller, size: int = 2000) -> None:
        self.controller, self.size, self.observations = controller, size, []

    def __call__(self, observation: Any) -> Any:
        if len(self.observations) < self.size:
            self.observations.append(observation)
        return self.controller(observation)


def compare_with_predict(
    lean: Controller, model: BaseAlgorithm, vec_normalize: VecNormalize | None, observations: list[Any]
) -> dict[str, float]:
    """SB3's ``predict`` beside the lean actor on the same observations: its mean time per call (us) and
    the largest difference between their actions.

    :param lean: the lean actor (``policy_controller``).
    :param model: the SB3 model it was taken from.
    :param vec_normalize: the model's observation statistics, None without.
    :param observations: the observations both act on (``ObservationSample.observations``).
    """
    predict = predict_controller(model, vec_normalize)
    start = time.perf_counter()
    expected = [predict(observation) for observation in observations]
    predict_us = 1e6 * (time.perf_counter() - start) / len(observations)
    difference = max(float(np.abs(lean(o) - e).max()) for o, e in zip(observations, expected))
    return {"sb3_predict_time_us_mean": predict_us, "lean_action_max_difference": difference}


def controller_for(cfg: DictConfig, name: str, run_dir: Path, train_cfg: DictConfig, env: Any) -> Controller:
    """The controller ``name`` acting in ``env``: the run's policy, or a classical one with ``cfg``'s gains.

    :param cfg: the composed ``EvaluateConfig`` (conf/evaluate.yaml).
    :param name: one of ``CONTROLLERS``.
    :param run_dir: the training run directory (.hydra/config.yaml inside).
    :param train_cfg: the run's config (``run_config``).
    :param env: the env it acts in, made from ``train_cfg.env``.
    """
    if name == "policy":
        return policy_controller(*load_model(model_path(cfg, run_dir), run_dir, train_cfg, env))
    controller_class, gains = CLASSICAL[name]
    return controller_class(env.unwrapped, **cfg[gains])


def evaluate_run(cfg: DictConfig, run_dir: Path) -> dict[str, dict[str, Any]]:
    """Evaluate each of ``cfg.controller`` on one run's goals and print the table of every controller
    evaluated on these goals; then write eval_<controller>.json each and the table (eval_table.json and
    .csv), log to wandb; returns controller -> summary. Plots and video go beside them when asked for.

    :param cfg: the composed ``EvaluateConfig`` (conf/evaluate.yaml).
    :param run_dir: the training run directory (.hydra/config.yaml inside).
    """
    train_cfg = run_config(run_dir, cfg.env)
    goal_seed = train_cfg.eval.goal_seed if cfg.goal_seed is None else cfg.goal_seed
    reports, media = {}, {}
    for name in controller_names(cfg):
        reports[name], media[name] = evaluate_controller(cfg, name, run_dir, train_cfg, goal_seed)
        print(f"{run_dir}: {train_cfg.env.id}, {name} on {cfg.n_episodes} goals from seed {goal_seed}")
    table = comparison_table(run_dir, goal_seed, cfg.n_episodes, reports)
    print(format_table(["metric", *table["controllers"]], table_rows(table)))  # before any write can fail
    if table[REFERENCE_IK_TIME] is not None:
        print(
            f"for reference, one PyBullet IK solve (calculateInverseKinematics) on these goals: {table[REFERENCE_IK_TIME]:.0f} us"
        )
    written = save_evaluation(run_dir, reports, table) + [path for files in media.values() for path in files.values()]
    if cfg.plots and len(reports) > 1:  # the controllers of this command in one figure
        first = next(iter(reports.values()))
        distances = {name: [e["distances"] for e in r["episodes"]] for name, r in reports.items()}
        threshold, title = (
            train_cfg.env.success_threshold,
            f"{train_cfg.env.id}: {', '.join(reports)} on the same goals",
        )
        written.append(plot_comparison(distances, first["dt"], threshold, run_dir / "eval_comparison.png", title))
    print(f"wrote in {run_dir}: {', '.join(path.name for path in written)}")
    summaries = {name: {k: v for k, v in r.items() if k not in REPORT_CONTEXT} for name, r in reports.items()}
    log_to_wandb(train_cfg, run_dir, summaries, {name: r["episodes"] for name, r in reports.items()}, media)
    return summaries


def evaluate_controller(
    cfg: DictConfig, name: str, run_dir: Path, train_cfg: DictConfig, goal_seed: int
) -> tuple[dict[str, Any], dict[str, Path]]:
    """One controller on the run's goals: (its eval_<name>.json contents, the plots and video it wrote).

    :param cfg: the composed ``EvaluateConfig`` (conf/evaluate.yaml).
    :param name: one of ``CONTROLLERS``.
    :param run_dir: the training run directory (.hydra/config.yaml inside).
    :param train_cfg: the run's config (``run_config``), env overrides applied.
    :param goal_seed: the seed of the goals (``evaluate``'s).
    """
    env = make_env(train_cfg.env)
    try:
        if name == "policy":
            model, vec_normalize = load_model(model_path(cfg, run_dir), run_dir, train_cfg, env)
            controller = ObservationSample(policy_controller(model, vec_normalize))
        else:
            controller = controller_for(cfg, name, run_dir, train_cfg, env)
        results = evaluate(env, controller, cfg.n_episodes, goal_seed)
        env.reset(seed=goal_seed)
        base = env.unwrapped.robot.link_position(-1)  # the robot's base at its start pose, m, for the goals plot
        summary = {
            **summarise(results),
            REFERENCE_IK_TIME: inverse_kinematics_time_us(env.unwrapped, [r.goal for r in results]),
        }
        if name == "policy":
            summary.update(compare_with_predict(controller.controller, model, vec_normalize, controller.observations))
        if isinstance(controller, (FabrikController, PyBulletIKController)):
            summary["solve_time_us_mean"] = controller.mean_solve_time_us
    finally:
        env.close()
    report = {
        "controller": name,
        "checkpoint": str(model_path(cfg, run_dir)) if name == "policy" else None,
        "env": OmegaConf.to_container(train_cfg.env, resolve=True),
        "goal_seed": goal_seed,
        "dt": env.unwrapped.dt,  # seconds per env step: per step, the interval of the episodes' distances
        **summary,
        "episodes": episode_rows(results),
    }
    stem = f"eval_{name}"

    threshold = train_cfg.env.success_threshold
    media: dict[str, Path] = {}
    if cfg.plots:
        title = f"{train_cfg.env.id}, {name}"
        media["distance_plot"] = plot_distances(
            results, report["dt"], threshold, run_dir / f"{stem}_distance.png", title
        )
        media["goals_plot"] = plot_goals(results, threshold, base, run_dir / f"{stem}_goals.png", title)
    if cfg.video:
        render_env = make_env(train_cfg.env, render_mode="rgb_array")
        try:
            seeds = [goal_seed + i for i in range(cfg.video_episodes)]
            controller = controller_for(cfg, name, run_dir, train_cfg, render_env)
            media["video"] = record_episodes(render_env, controller, seeds, run_dir / f"{stem}.mp4")
        finally:
            render_env.close()
    return report, media


def export_run(cfg: DictConfig, run_dir: Path) -> None:
    """Write the model's actor as <run dir>/policy.npz (numpy only) and policy.onnx, and check both against
    SB3's ``predict`` on the observations of a few evaluation episodes.

    :param cfg: the composed ``EvaluateConfig`` (conf/evaluate.yaml).
    :param run_dir: the training run directory (.hydra/config.yaml inside).
    """
    train_cfg = run_config(run_dir, cfg.env)
    path = model_path(cfg, run_dir)
    env = make_env(train_cfg.env)
    try:
        model, vec_normalize = load_model(path, run_dir, train_cfg, env)
        env_config = OmegaConf.to_container(train_cfg.env, resolve=True)
        lean = lean_policy(model, vec_normalize, source=str(path.resolve()), env=env_config)
        sample = ObservationSample(lean.act)
        evaluate(env, sample, 5, train_cfg.eval.goal_seed)
    finally:
        env.close()
    observations = sample.observations
    expected = np.stack([predict_controller(model, vec_normalize)(o) for o in observations])
    npz = lean.save(run_dir / "policy.npz")
    difference = np.abs(LeanPolicy.load(npz).act(stack_observations(observations)) - expected).max()
    print(f"wrote {npz}: largest action difference from SB3's predict {difference:.1e} on {len(expected)} observations")
    try:
        onnx_path = save_onnx(lean, run_dir / "policy.onnx")
        difference = np.abs(OnnxPolicy(onnx_path).act(stack_observations(observations)) - expected).max()
        print(f"wrote {onnx_path}: largest action difference from SB3's predict {difference:.1e} (ONNX Runtime)")
    except ImportError as error:
        print(f"policy.onnx not written: {error}")


def watch_run(cfg: DictConfig, run_dir: Path) -> None:
    """``watch=true``: each controller in PyBullet's window on ``watch_goals``, or on ``watch_episodes`` random goals
    from ``goal_seed`` (unset: a new seed, printed so that the same goals can be shown again).

    :param cfg: the composed ``EvaluateConfig`` (conf/evaluate.yaml).
    :param run_dir: the training run directory (.hydra/config.yaml inside).
    """
    if not display_available():
        exit_bad_input(
            "watch=true opens PyBullet's window, but there is no display ($DISPLAY is unset); write a video "
            f"instead: python evaluate.py run={run_dir} video=true (eval_<controller>.mp4 in the run directory)."
        )
    train_cfg = run_config(run_dir, cfg.env)
    seed = secrets.randbelow(1_000_000) if cfg.goal_seed is None else cfg.goal_seed
    env = make_env(train_cfg.env, render_mode="human")
    try:
        goal_dim = env.unwrapped.task.goal_dim
        goals = [None] * cfg.watch_episodes if cfg.watch_goals is None else parse_goals(cfg.watch_goals, goal_dim)
        controllers = {name: controller_for(cfg, name, run_dir, train_cfg, env) for name in controller_names(cfg)}
        chosen = "the goals of watch_goals" if cfg.watch_goals is not None else f"random goals from goal_seed={seed}"
        print(f"{run_dir}: {train_cfg.env.id}, {', '.join(controllers)} on {chosen}, {cfg.watch_speed:g} x real time")
        watch(env, controllers, goals, seed, cfg.watch_speed)
    finally:
        env.close()
