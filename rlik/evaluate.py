"""Evaluate a saved policy, or the classical Jacobian controller, on a fixed, seeded set of goals.

    python evaluate.py run=outputs/<date>/<run>                       # final_model.zip on 200 held-out goals
    python evaluate.py run=<run dir> controller=jacobian              # classical baseline, same env, same goals
    python evaluate.py checkpoint=<run dir>/checkpoints/step_<N>/model.zip env.success_threshold=0.005
    python evaluate.py run=<run dir> video=true plots=true            # + eval_<controller>.mp4 and PNGs
    python evaluate.py sweep=multirun/<date>                          # every job, ranked (+ CSV)
    python evaluate.py run=<run dir> export=true                      # policy.npz + policy.onnx of its model
    python evaluate.py run=<run dir> watch=true [controller=jacobian]  # in PyBullet's window (rlik-enjoy run=...)

The env is rebuilt from the run's .hydra/config.yaml (env.* overrides on top). Writes
<run dir>/eval_<controller>.json: the summary (distances m, times s, torques N m, compute times
microseconds) and one row per episode; prints it beside the other controllers' eval files.
"""

from __future__ import annotations

import csv
import math
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import wandb
from hydra.core.hydra_config import HydraConfig
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
from rlik.evaluation.episodes import (
    REACHED,
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
from rlik.evaluation.sweeps import configuration_table, flatten, swept_keys
from rlik.evaluation.watch import parse_goals, watch
from rlik.ops.cli import exit_bad_input, run_main
from rlik.ops.interrupts import Interrupted, SignalStop
from rlik.ops.tracking import STEP_METRIC, experiment_group, experiment_tags, goal_table, init_run
from rlik.policy.export import OnnxPolicy, lean_policy, save_onnx
from rlik.policy.lean import LeanPolicy, stack_observations
from rlik.policy.loading import load_model, model_file, run_config
from rlik.training import checkpoints
from rlik.training.config import (
    CONF_DIR,
    CONTROLLERS,
    WandbConfig,
    controller_names,
    register_evaluate_config,
    validate_evaluate_config,
)
from rlik.training.factory import make_env

# Classical controllers (the names of rlik/training/config.py's CONTROLLERS but "policy"): name -> (class in
# rlik/control/, the config node of its gains).
CLASSICAL = {
    "jacobian": (JacobianController, "jacobian"),
    "fabrik": (FabrikController, "fabrik"),
    "jacobian_balance": (BalancedJacobianController, "jacobian_balance"),
    "pybullet_ik": (PyBulletIKController, "pybullet_ik"),
}
# The keys of an eval_<controller>.json that say what was evaluated; the others summarise how it went.
REPORT_CONTEXT = ("controller", "checkpoint", "env", "goal_seed", "dt", "episodes")
# Rows of the printed table: (summary key, label, format).
TABLE = [
    ("success_rate", "success rate", "{:.1%}"),
    ("final_distance_mean", "final distance mean (m)", "{:.4f}"),
    ("final_distance_median", "final distance median (m)", "{:.4f}"),
    ("final_distance_p95", "final distance p95 (m)", "{:.4f}"),
    ("time_to_reach_mean", "time to reach mean (s)", "{:.3f}"),
    ("fall_rate", "fall rate", "{:.1%}"),
    # Humanoid goals by kind (envs' info["goal_kind"]): beyond the arm's reach from an upright torso, or not.
    ("success_rate_lean", "success, lean goals", "{:.1%}"),
    ("fall_rate_lean", "falls, lean goals", "{:.1%}"),
    ("goals_lean", "lean goals", "{}"),
    ("success_rate_upright", "success, upright goals", "{:.1%}"),
    ("fall_rate_upright", "falls, upright goals", "{:.1%}"),
    ("goals_upright", "upright goals", "{}"),
    ("mean_abs_torque", "mean |torque| (N m)", "{:.3f}"),
    ("episode_return_mean", "episode return mean", "{:.2f}"),
    ("control_time_us_mean", "control step (us)", "{:.0f}"),
    ("sb3_predict_time_us_mean", "SB3 predict (us)", "{:.0f}"),
    ("lean_action_max_difference", "max |lean - predict|", "{:.1e}"),
    ("solve_time_us_mean", "IK solve (us)", "{:.0f}"),
    ("n_episodes", "episodes", "{}"),
]
# Every eval_<controller>.json also times one PyBullet IK solve on its goals: a reference beside the table, not a
# controller's own figure (the policy solves no IK).
REFERENCE_IK_TIME = "ik_time_us_mean"


register_evaluate_config()


def run_dir_of(checkpoint: Path) -> Path:
    """The training run directory holding ``checkpoint`` (the nearest parent with .hydra/config.yaml)."""
    for parent in checkpoint.resolve().parents:
        if (parent / ".hydra" / "config.yaml").is_file():
            return parent
    raise FileNotFoundError(
        f"checkpoint={checkpoint}: no run directory (.hydra/config.yaml) above it; add run=<its training run dir>."
    )


def model_path(cfg: DictConfig, run_dir: Path) -> Path:
    """The zip to evaluate: ``checkpoint=``, else the run's best, final or latest model."""
    return Path(cfg.checkpoint) if cfg.checkpoint else model_file(run_dir, cfg.model)


class ObservationSample:
    """A controller that also keeps the first ``size`` observations it is given, to replay them later."""

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
    the largest difference between their actions."""
    predict = predict_controller(model, vec_normalize)
    start = time.perf_counter()
    expected = [predict(observation) for observation in observations]
    predict_us = 1e6 * (time.perf_counter() - start) / len(observations)
    difference = max(float(np.abs(lean(o) - e).max()) for o, e in zip(observations, expected))
    return {"sb3_predict_time_us_mean": predict_us, "lean_action_max_difference": difference}


def controller_for(cfg: DictConfig, name: str, run_dir: Path, train_cfg: DictConfig, env: Any) -> Controller:
    if name == "policy":
        return policy_controller(*load_model(model_path(cfg, run_dir), run_dir, train_cfg, env))
    controller_class, gains = CLASSICAL[name]
    return controller_class(env.unwrapped, **cfg[gains])


def evaluate_run(cfg: DictConfig, run_dir: Path) -> dict[str, dict[str, Any]]:
    """Evaluate each of ``cfg.controller`` on one run's goals and print the table of every controller
    evaluated on these goals; then write eval_<controller>.json each and the table (eval_table.json and
    .csv), log to wandb; returns controller -> summary. Plots and video go beside them when asked for."""
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
    log_to_wandb(cfg, train_cfg, run_dir, summaries, {name: r["episodes"] for name, r in reports.items()}, media)
    return summaries


def evaluate_controller(
    cfg: DictConfig, name: str, run_dir: Path, train_cfg: DictConfig, goal_seed: int
) -> tuple[dict[str, Any], dict[str, Path]]:
    """One controller on the run's goals: (its eval_<name>.json contents, the plots and video it wrote)."""
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
            "ik_time_us_mean": inverse_kinematics_time_us(env.unwrapped, [r.goal for r in results]),
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
    SB3's ``predict`` on the observations of a few evaluation episodes."""
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
    from ``goal_seed`` (unset: a new seed, printed so that the same goals can be shown again)."""
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


def comparison_table(
    run_dir: Path, goal_seed: int, n_episodes: int, reports: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """``reports`` beside the run's other eval_<controller>.json on the same goals: {"goal_seed", "metrics":
    the table's metric keys, "controllers": controller -> metric -> value (None where it has none), and
    ``REFERENCE_IK_TIME``: the mean time of one PyBullet IK solve on these goals (us; None in older files)}."""
    merged = {}
    for name in CONTROLLERS:
        path = run_dir / f"eval_{name}.json"
        if name in reports:
            merged[name] = reports[name]
        elif path.is_file():
            try:
                report = checkpoints.read_json(path)
            except ValueError as error:  # an old, damaged evaluation must not cost this one its files
                print(f"warning: {error} Left out of the table.", file=sys.stderr)
                continue
            if report.get("goal_seed") == goal_seed and report.get("n_episodes") == n_episodes:
                merged[name] = report
    metrics = [key for key, _, _ in TABLE if any(key in r for r in merged.values())]
    # With several end effectors: each one's success alone, after the success rate (TABLE's first row).
    reached = list(dict.fromkeys(key for r in merged.values() for key in r if key.startswith(REACHED)))
    metrics[1:1] = reached
    values = {name: {key: r.get(key) for key in metrics} for name, r in merged.items()}
    ik_times = [r[REFERENCE_IK_TIME] for r in merged.values() if r.get(REFERENCE_IK_TIME) is not None]
    reference = float(np.mean(ik_times)) if ik_times else None
    return {"goal_seed": goal_seed, "metrics": metrics, "controllers": values, REFERENCE_IK_TIME: reference}


def table_rows(table: dict[str, Any]) -> list[list[str]]:
    """The printed rows of a ``comparison_table``: one per metric, one column per controller."""
    formats = {key: (label, fmt) for key, label, fmt in TABLE}
    formats.update(
        {
            key: (f"success, {key.removeprefix(REACHED)} alone", "{:.1%}")
            for key in table["metrics"]
            if key.startswith(REACHED)
        }
    )
    return [
        [formats[key][0], *(cell(r[key], formats[key][1]) for r in table["controllers"].values())]
        for key in table["metrics"]
    ]


def cell(value: Any, form: str) -> str:
    """A printed value; a dash where there is none: None (a metric the controller lacks, null in a file) or NaN (a
    mean over no episodes, e.g. the time to reach when no goal was reached)."""
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else form.format(value)


def save_evaluation(run_dir: Path, reports: dict[str, dict[str, Any]], table: dict[str, Any]) -> list[Path]:
    """eval_<controller>.json for each report, and the table as eval_table.json and .csv; a write that fails
    (read-only directory, full disk) is one line naming its file. Returns the files written."""
    csv_rows = [["controller", *table["metrics"]], *([n, *r.values()] for n, r in table["controllers"].items())]
    path = run_dir
    try:
        for name, report in reports.items():
            path = run_dir / f"eval_{name}.json"
            checkpoints.atomic_write_json(path, report)
        path = run_dir / "eval_table.json"
        checkpoints.atomic_write_json(path, table)
        path = run_dir / "eval_table.csv"
        checkpoints.atomic_write(path, lambda tmp: write_csv(tmp, csv_rows))
    except OSError as error:
        raise OSError(
            f"cannot write {path} ({error.strerror}): the results above are not saved; make {run_dir} writable, "
            "or copy the run directory and evaluate the copy."
        ) from None
    return [run_dir / f"eval_{name}.json" for name in reports] + [run_dir / "eval_table.json", path]


def write_csv(path: Path, rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in lines)


def log_to_wandb(
    cfg: DictConfig,
    train_cfg: DictConfig,
    run_dir: Path,
    summaries: dict[str, dict[str, Any]],
    episodes: dict[str, list[dict[str, Any]]],
    media: dict[str, dict[str, Path]],
) -> None:
    """Into the run's wandb run (resumed by id; else a new one in its group): each controller's summary, its
    table of one row per goal, plots and video at the run's last step, and copies of the eval files.

    The resumed segment leaves the wandb directory's ``latest-run`` on the training's own, so that
    ``wandb leet inspect --summary <run dir>/wandb`` still shows the training (config, final metrics).
    wandb keys: the run's own, with those given on this command line on top.

    :param episodes: controller -> its ``episode_rows``.
    """
    given = [o for o in HydraConfig.get().overrides.task if o.startswith("wandb.")]
    wandb_cfg = OmegaConf.merge(
        OmegaConf.structured(WandbConfig), train_cfg.get("wandb", {}), OmegaConf.from_dotlist(given).get("wandb", {})
    )
    run_info = checkpoints.read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    run_id = run_info.get("wandb_run_id")
    config = None if run_id else OmegaConf.to_container(train_cfg, resolve=True)
    group = run_info.get("wandb_group") or experiment_group(train_cfg)
    tags = experiment_tags(train_cfg)
    run = init_run(wandb_cfg, config, str(run_dir), run_id, group, job_type="eval", latest=run_id is None, tags=tags)
    if run is None:
        return
    logged: dict[str, Any] = {}
    for controller, summary in summaries.items():
        name = f"eval_{controller}"
        run.summary.update({f"{name}/{key}": value for key, value in summary.items()})
        logged[f"{name}/goals"] = goal_table(episodes[controller])
        files = media[controller]
        logged.update({f"{name}/{key}": wandb.Image(str(path)) for key, path in files.items() if key != "video"})
        if "video" in files and wandb_cfg.video:
            logged[f"{name}/video"] = wandb.Video(str(files["video"]), format="mp4")
    checkpoint = checkpoints.latest_checkpoint(run_dir / "checkpoints")  # the run's last step
    step = {STEP_METRIC: checkpoints.read_state(checkpoint)["num_timesteps"]} if checkpoint else {}
    run.log({**logged, **step})
    # Copies, not links to run_dir: reached through outputs/latest, a link would follow it to the next run.
    for name in [f"eval_{controller}.json" for controller in summaries] + ["eval_table.json", "eval_table.csv"]:
        copy = shutil.copy2(run_dir / name, Path(run.dir) / name)
        run.save(str(copy), base_path=run.dir, policy="now")
    run.finish()


def evaluate_sweep(cfg: DictConfig, sweep_dir: Path) -> None:
    """Evaluate every job of a multirun that has a usable model and rank them; list the others with the reason.
    Writes <sweep>/eval_<controller>_ranking.csv (one row per ranked job) and eval_<controller>_configurations.csv
    (one row per configuration, its seeds pooled)."""
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep={sweep_dir} does not exist; pass a multirun directory (hydra.sweep.dir).")
    found = sorted(p for p in sweep_dir.iterdir() if (p / ".hydra" / "config.yaml").is_file())
    if not found:
        raise FileNotFoundError(
            f"sweep={sweep_dir} has no job directories with .hydra/config.yaml; pass a multirun directory."
        )
    # A job that failed or was stopped before writing the model asked for is listed, not a reason to rank none.
    jobs, summaries, unranked = [], [], []
    for job in found:
        try:
            summaries.append(evaluate_run(cfg, job)[cfg.controller])
            jobs.append(job)
        except (ValueError, OSError) as error:
            unranked.append(f"{job.name}: {error}")
    failed_jobs = sweep_dir / "failed_jobs.txt"  # train.py's record of the jobs that failed and left no directory
    unranked += failed_jobs.read_text().splitlines() if failed_jobs.is_file() else []
    if not jobs:
        raise FileNotFoundError(f"no job of sweep={sweep_dir} could be evaluated: {'; '.join(unranked)}")
    configs = [
        flatten(OmegaConf.to_container(checkpoints.read_yaml(job / ".hydra" / "config.yaml"), resolve=True))
        for job in jobs
    ]
    keys = swept_keys(configs)
    ranked = sorted(zip(jobs, configs, summaries), key=lambda j: (-j[2]["success_rate"], j[2]["final_distance_mean"]))
    metrics = ["success_rate", "final_distance_median", "final_distance_mean", "fall_rate", "episode_return_mean"]
    rows = [
        [i + 1, job.name, *(c.get(k) for k in keys), *(cell(s[m], "{:.4g}") for m in metrics)]
        for i, (job, c, s) in enumerate(ranked)
    ]
    headers = ["rank", "job", *keys, *metrics]
    path = sweep_dir / f"eval_{cfg.controller}_ranking.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([headers, *rows])
    print(f"\nranking of {len(jobs)} jobs ({cfg.controller}, {cfg.n_episodes} goals each), also in {path}:")
    print(format_table(headers, rows))
    # The same jobs pooled over their seeds: one row per configuration (rlik/evaluation/sweeps.py).
    headers, rows = configuration_table([j.name for j in jobs], configs, [s["success_rate"] for s in summaries], keys)
    path = sweep_dir / f"eval_{cfg.controller}_configurations.csv"
    write_csv(path, [headers, *rows])
    print(f"\nsuccess rate per configuration over its seeds (mean, spread, 95 % bootstrap interval), also in {path}:")
    print(format_table(headers, rows))
    if unranked:
        print(f"\nnot ranked ({len(unranked)}):\n" + "\n".join(f"  {line}" for line in unranked))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        validate_evaluate_config(cfg)
        torch.set_num_threads(cfg.torch_threads)
        run_dir = run_dir_of(Path(cfg.checkpoint)) if cfg.checkpoint and not cfg.run else Path(cfg.run or ".")
        if cfg.sweep:
            evaluate_sweep(cfg, Path(cfg.sweep))
        elif cfg.export:
            export_run(cfg, run_dir)
        elif cfg.watch:
            watch_run(cfg, run_dir)
        else:
            evaluate_run(cfg, run_dir)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def cli() -> None:
    """``python evaluate.py`` and the ``rlik-evaluate`` console script."""
    # env.* keys are the run's, unknown to the schema: add them (run_config then checks them against the run).
    if any(a.startswith("env=") for a in sys.argv[1:]):
        exit_bad_input(
            "evaluate.py evaluates a run on the env it was trained on: env= is not one of its keys; change one of "
            "the run's env keys with env.<key>=<value>, or evaluate another run with run=<dir>."
        )
    sys.argv[1:] = [f"++{a}" if a.startswith("env.") else a for a in sys.argv[1:]]
    # Ctrl-C or SIGTERM: an evaluation cut short ends at once, in one line (its files are written whole or not at all).
    stop = SignalStop()
    stop.install()
    try:
        run_main(main, "evaluate.py")
    except Interrupted as interrupted:
        print(
            f"interrupted ({interrupted.name}): evaluation stopped; files it wrote are whole, the rest unwritten.",
            file=sys.stderr,
        )
        sys.exit(interrupted.exit_code)
    finally:
        stop.uninstall()


def enjoy() -> None:
    """The ``rlik-enjoy`` console script: ``evaluate.py watch=true`` (rl-baselines3-zoo's ``enjoy``)."""
    sys.argv.insert(1, "watch=true")
    cli()


if __name__ == "__main__":
    cli()
