"""One training run, step by step: configuration, envs and model, tracking, learning, then the final model,
its evaluation and the run's artefacts. ``rlik.train`` (the command) calls ``train`` under the run's lock.

Run directory: .hydra/config.yaml, run.json (wandb id), derived.json (ArmReach-v0's derived settings),
checkpoints/step_<N>/, best_model.zip, final_model.zip, metrics.json (final evaluation), progress.csv, train.log,
video.mp4, wandb/. The SB3 callbacks are in rlik/training/callbacks.py, what a resume may change in
rlik/training/resume.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
import wandb
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv

from rlik.evaluation.episodes import episode_rows, evaluate, policy_controller, record_episodes, summarise
from rlik.ops import interrupts
from rlik.ops.interrupts import Interrupted, StopOnSignal
from rlik.ops.launchers import job_torch_threads
from rlik.ops.logs import job_prefix, say, set_console_prefix
from rlik.ops.tracking import (
    STEP_METRIC,
    ContinuedCSVOutputFormat,
    LineOutputFormat,
    WandbOutputFormat,
    experiment_group,
    experiment_tags,
    goal_table,
    init_run,
    log_model,
    resolved_config,
    swept_values,
)
from rlik.paths import RunDir
from rlik.training import checkpoints
from rlik.training.averaging import ActorAverage
from rlik.training.callbacks import ActorAveraging, Checkpointing, GoalCurriculum, HeldOutEvaluation, RunState
from rlik.training.config import check_learning_starts, validate_config
from rlik.training.factory import derived_settings, derived_settings_text, make_env, make_model, make_training_env
from rlik.training.resume import grow_replay_buffer, load_newest_checkpoint, resumed_config


def train(cfg: DictConfig, run_dir: Path, multirun: bool) -> float:
    """Train (or resume) the run in ``run_dir``, evaluate it and write its artefacts; the caller holds its lock.

    :return: the final success rate on the held-out goals, in [0, 1].
    """
    files = RunDir(run_dir)
    # 0. Leftovers of writes cut short by a dead trainer or evaluation; under the run lock, so no live writer's.
    for directory in (run_dir, files.checkpoints):
        checkpoints.remove_stale_temporaries(directory)
    swept = sweep_job_values() if multirun else {}

    # 1. Configuration: a resumed run continues with its own config and the state of its newest checkpoint.
    changed = {}
    if cfg.resume:
        cfg, changed = resumed_config(cfg.resume, HydraConfig.get().overrides.task)
    validate_config(cfg)
    # This job's share of the cores under its launcher: joblib, submitit_local, Ray, SLURM (rlik/ops/launchers.py).
    torch.set_num_threads(job_torch_threads(cfg.torch_threads, HydraConfig.get().launcher if multirun else None))

    # 2. Envs and model (fresh, or the newest checkpoint that reads whole, with its replay buffer and statistics).
    eval_env = make_env(cfg.env)  # the held-out goals: periodic evaluations in step 4, the final one in step 5
    if derived := derived_settings(eval_env):  # settings derived from the robot's URDF: shown, and kept
        say(derived_settings_text(cfg.env.urdf, derived))
        check_learning_starts(cfg, getattr(eval_env.unwrapped, "episode_steps", None))  # an arm's derived length
        checkpoints.atomic_write_json(files.derived, derived)
    # A resumed run normalises with its checkpoint's statistics, loaded below, not fresh ones.
    env = make_training_env(
        cfg.env,
        cfg.n_envs,
        cfg.seed,
        cfg.normalize_observations and not cfg.resume,
        cfg.normalize_goals,
        cfg.missed_goal_replay,
    )
    if cfg.resume:
        model, average, state = resumed_model(cfg, run_dir, env, changed)
        env = model.get_env()  # in the checkpoint's statistics
    else:
        model, average, state = new_model(cfg, env)

    # 3. Tracking: wandb (offline unless logged in), CSV, and line logs (only the evaluations' beside a progress bar).
    run = start_tracking(cfg, run_dir, model, state, multirun, swept)

    # 4. Learn, evaluating and checkpointing on the way. The callbacks share the run's state (best score,
    # clock, goal range), which every checkpoint saves and a resume continues.
    curriculum_start = cfg.curriculum.start if cfg.curriculum.enabled else None
    run_state = RunState.resumed(state, run.id if run else None, curriculum_start)
    checkpointing = Checkpointing(cfg, run_dir, run_state, average)
    # First: a stop counts its step back before the others see it (no evaluation at a step not kept).
    callbacks: list[BaseCallback] = [StopOnSignal(interrupts.SIGNAL_STOP)]
    callbacks += [HeldOutEvaluation(cfg, run_dir, run_state, eval_env)] if cfg.eval.freq > 0 else []
    callbacks += [GoalCurriculum(cfg, run_state)] if cfg.curriculum.enabled else []
    callbacks += [ActorAveraging(average)] if average else []
    callbacks += [checkpointing]  # last: the actor averaged and the best score updated before they are saved
    start_steps = model.num_timesteps
    model.learn(
        total_timesteps=max(cfg.total_timesteps - model.num_timesteps, 0),
        callback=callbacks,
        log_interval=cfg.log_interval,
        reset_num_timesteps=False,
        progress_bar=interactive(cfg),
    )
    seconds = run_state.learn_seconds(model)  # rollouts, updates, callbacks
    last_checkpoint = checkpointing.save()  # the last actor, to resume from
    if (signum := interrupts.SIGNAL_STOP.signum) is not None:  # stopped by a signal: keep what was learnt
        if run:
            run.finish(exit_code=Interrupted(signum).exit_code)  # flushes the history to disk
        env.close()
        eval_env.close()
        raise Interrupted(signum, last_checkpoint)

    # 5. The final model, its evaluation on the held-out goals (the success rate is the sweep objective), the
    # run's artefacts.
    if average and average.count:
        average.apply(model.policy.actor)
        say(f"final model: the mean of {average.count} actors from step {average.first_step} on")
    checkpoints.save_model(model, files.model("final"))
    if not files.model("best").exists():
        checkpoints.save_model(model, files.model("best"))
    speed = (model.num_timesteps - start_steps) / (seconds - run_state.learn_seconds_before)
    metrics, episodes = final_evaluation(cfg, run_dir, model, eval_env, seconds, speed, average)
    video = record_video(cfg, model, files.video) if cfg.wandb.video_episodes > 0 else None
    if run:
        finish_tracking(cfg, run_dir, run, run_state, metrics, episodes, video if cfg.wandb.video else None)
    env.close()
    say(f"run directory: {run_dir} (evaluate it with: python evaluate.py run={run_dir})")
    return metrics["success_rate"]


def sweep_job_values() -> dict[str, Any]:
    """A sweep job's swept values (``{"seed": 1}``). Jobs side by side under joblib (its launcher has n_jobs) print
    into one console: each line then says whose it is. Other launchers give each job its own log, or one at a time."""
    hydra_cfg = HydraConfig.get()
    swept = swept_values(list(hydra_cfg.overrides.task), Path(hydra_cfg.sweep.dir), hydra_cfg.sweeper.get("params"))
    if "n_jobs" in hydra_cfg.launcher:
        set_console_prefix(job_prefix(hydra_cfg.job.num, swept))
    return swept


def new_model(cfg: DictConfig, env: VecEnv) -> tuple[BaseAlgorithm, ActorAverage | None, dict[str, Any]]:
    """A fresh model, the actor average it will keep (if the run averages), and an empty run state."""
    average = None
    if cfg.algo.actor_average_start is not None:
        average = ActorAverage(int(cfg.algo.actor_average_start * cfg.total_timesteps))
    return make_model(cfg, env), average, {}


def resumed_model(
    cfg: DictConfig, run_dir: Path, env: VecEnv, changed: dict[str, Any]
) -> tuple[BaseAlgorithm, ActorAverage | None, dict[str, Any]]:
    """The newest checkpoint that reads whole: its model (replay buffer and statistics included), the actor
    average so far, and the run state it saved. Read before tracking starts: a corrupt file touches nothing."""
    latest, model, average = load_newest_checkpoint(run_dir, cfg, env)
    changes = "".join(f", algo.{key}={value}" for key, value in changed.items())
    say(f"resumed from {latest} at step {model.num_timesteps}{changes}")
    capacity = model.replay_buffer.buffer_size * model.replay_buffer.n_envs
    if grow_replay_buffer(model.replay_buffer, cfg.algo.buffer_size):  # an extended run keeps every transition
        model.buffer_size = cfg.algo.buffer_size  # what the next checkpoints' zips record
        say(f"replay buffer grown from {capacity} to {cfg.algo.buffer_size} transitions")
    return model, average, checkpoints.read_state(latest)


def interactive(cfg: DictConfig) -> bool:
    """Whether the run shows SB3's progress bar (with the periodic evaluations printed above it)."""
    return sys.stdout.isatty() if cfg.progress_bar is None else cfg.progress_bar


def start_tracking(
    cfg: DictConfig, run_dir: Path, model: BaseAlgorithm, state: dict[str, Any], multirun: bool, swept: dict
) -> Any:
    """The wandb run (None when disabled) and the model's loggers: progress.csv, wandb, console lines (only the
    evaluations' beside a progress bar). A resumed run stays in its group; a new one joins its experiment's."""
    files = RunDir(run_dir)
    run_info = checkpoints.read_json(files.run_info) if cfg.resume and files.run_info.is_file() else {}
    config, group = resolved_config(cfg), run_info.get("wandb_group") or experiment_group(cfg)
    if multirun:  # a sweep's jobs: one group, and the values this job was given, to filter and compare by
        group = f"sweep-{Path(HydraConfig.get().sweep.dir).name}"
        config["swept"] = swept
    say(f"run directory: {run_dir}")
    run = init_run(cfg.wandb, config, str(run_dir), state.get("wandb_run_id"), group, tags=experiment_tags(cfg))
    checkpoints.atomic_write_json(
        files.run_info, {"wandb_run_id": run.id if run else None, "wandb_group": run.group if run else None}
    )
    outputs = Path.cwd() / "outputs"
    if not multirun and outputs in run_dir.resolve().parents:
        checkpoints.atomic_symlink(outputs / "latest", run_dir.resolve())
    formats = [ContinuedCSVOutputFormat(files.progress, model.num_timesteps if cfg.resume else None)]
    formats += [WandbOutputFormat(run)] if run else []
    formats += [LineOutputFormat("eval/" if interactive(cfg) else "")]
    model.set_logger(Logger(str(run_dir), formats))
    return run


def final_evaluation(
    cfg: DictConfig,
    run_dir: Path,
    model: BaseAlgorithm,
    eval_env: gym.Env,
    seconds: float,
    steps_per_second: float,
    average: ActorAverage | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The final model on the held-out goals, written to metrics.json: (the summary, one row per episode)."""
    files = RunDir(run_dir)
    results = evaluate(
        eval_env, policy_controller(model, model.get_vec_normalize_env()), cfg.eval.final_goals, cfg.eval.goal_seed
    )
    metrics = {
        **summarise(results),
        "num_timesteps": model.num_timesteps,
        "learn_seconds": seconds,
        "learn_steps_per_second": steps_per_second,
        "torch_threads": torch.get_num_threads(),
        "averaged_actors": average.count if average else 0,
    }
    episodes = episode_rows(results)
    checkpoints.atomic_write_json(files.metrics, {**metrics, "episodes": episodes})
    say("final evaluation: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics, episodes


def record_video(cfg: DictConfig, model: BaseAlgorithm, path: Path) -> Path:
    """An mp4 of ``wandb.video_episodes`` held-out episodes, rendered headless."""
    env = make_env(cfg.env, render_mode="rgb_array")
    seeds = [cfg.eval.goal_seed + i for i in range(cfg.wandb.video_episodes)]
    try:
        return record_episodes(env, policy_controller(model, model.get_vec_normalize_env()), seeds, path)
    finally:
        env.close()


def finish_tracking(
    cfg: DictConfig,
    run_dir: Path,
    run: Any,
    run_state: RunState,
    metrics: dict[str, Any],
    episodes: list[dict[str, Any]],
    video: Path | None,
) -> None:
    """The final evaluation, its goals and ``video`` in the wandb run, and the models as artifact versions, each
    with the evaluation it was picked by (success, falls: fractions; distance: m)."""
    files = RunDir(run_dir)
    run.summary.update({f"final/{k}": v for k, v in metrics.items()})
    logged = {"final/goals": goal_table(episodes)}
    if video:
        logged["final/video"] = wandb.Video(str(video), format="mp4")
    run.log({**logged, STEP_METRIC: metrics["num_timesteps"]})
    described = {"env": cfg.env.id, "algo": cfg.algo.name}
    final = {key: metrics[key] for key in ("num_timesteps", "success_rate", "fall_rate", "final_distance_median")}
    log_model(run, files.model("final"), "final", {**described, **final})
    best = {}  # without periodic evaluations best_model.zip is the final model
    if run_state.best_score is not None:  # as compared: fall rate and distance negated
        success, fall, distance = run_state.best_score
        best = {"success_rate": success, "fall_rate": -fall, "final_distance_median": -distance}
    log_model(run, files.model("best"), "best", {**described, **best})
    run.finish()
