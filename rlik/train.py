"""Train a learned-IK policy with SB3 (DDPG by default) under Hydra, logging to Weights & Biases.

    python train.py                                   # planar arm, DDPG, default budget
    python train.py env=humanoid total_timesteps=300000
    python train.py -m seed=0,1,2 algo.learning_rate=1e-3,3e-4 hydra/launcher=joblib
    python train.py resume=outputs/2026-11-23/12-00-00-123456_PlanarArmReach-v0_ddpg_seed0

Run directory: .hydra/config.yaml, run.json (wandb id), derived.json (ArmReach-v0's derived settings),
checkpoints/step_<N>/, best_model.zip,
final_model.zip, metrics.json (final evaluation), progress.csv, video.mp4, wandb/.

``train`` is the run, step by step; its SB3 callbacks are in rlik/training/callbacks.py, what a resume may
change in rlik/training/resume.py, and the command line's one-line errors in rlik/ops/cli.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
import wandb
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger

from rlik.evaluation.episodes import episode_rows, evaluate, policy_controller, record_episodes, summarise
from rlik.ops import interrupts
from rlik.ops.cli import exit_bad_input, interrupted_line, report_failed_job, run_main
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
from rlik.training import checkpoints
from rlik.training.averaging import ActorAverage
from rlik.training.callbacks import ActorAveraging, Checkpointing, GoalCurriculum, HeldOutEvaluation, RunState
from rlik.training.config import CONF_DIR, check_learning_starts, register_configs, validate_config
from rlik.training.factory import (
    derived_settings,
    derived_settings_text,
    make_env,
    make_model,
    make_training_env,
)
from rlik.training.resume import check_resume_argument, grow_replay_buffer, load_newest_checkpoint, resumed_config

register_configs()
# A resumed run writes into its own directory and keeps its original .hydra/config.yaml.
OmegaConf.register_new_resolver("run_dir_or_resume", lambda resume, default: resume or default)
OmegaConf.register_new_resolver("hydra_subdir", lambda resume: ".hydra_resume" if resume else ".hydra")


def record_video(cfg: DictConfig, model: BaseAlgorithm, path: Path) -> Path:
    """An mp4 of ``wandb.video_episodes`` held-out episodes, rendered headless."""
    env = make_env(cfg.env, render_mode="rgb_array")
    seeds = [cfg.eval.goal_seed + i for i in range(cfg.wandb.video_episodes)]
    try:
        return record_episodes(env, policy_controller(model, model.get_vec_normalize_env()), seeds, path)
    finally:
        env.close()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    """One training job (of a multirun too) in Hydra's run directory; its failures as one line each.

    :return: the final success rate on the held-out goals, in [0, 1] (the Optuna sweeper's objective).
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        # One trainer per run directory: a second one (say, a resume= typed twice) is refused untouched. A new
        # run's lock was taken before Hydra wrote here (rlik.ops.cli.NewRunDirectory); the others take it now.
        lock = checkpoints.RunLock.take(run_dir)
    except checkpoints.RunInUse as error:
        if multirun:
            report_failed_job(error)
            raise
        exit_bad_input(str(error))
    try:
        with lock:
            return train(cfg, run_dir, multirun)
    except Interrupted as interrupted:
        # Stopped before a checkpoint (in start-up): nothing to resume, so no half-made run directory either.
        if not cfg.resume and checkpoints.latest_checkpoint(run_dir / "checkpoints") is None:
            lock.undo_start(run_dir)
        print(interrupted_line(interrupted, run_dir), file=sys.stderr, flush=True)
        interrupts.SIGNAL_STOP.hand_over(interrupted.signum)  # a submitit job's USR2: requeued as resume=<run dir>
        sys.exit(interrupted.exit_code)
    except checkpoints.DiskWriteError as error:  # a full disk, a directory made read-only mid-run
        if multirun:
            report_failed_job(error)
            raise
        print(f"error: {error}, then continue with: python train.py resume={run_dir}", file=sys.stderr)
        sys.exit(1)
    except (ValueError, FileNotFoundError) as error:
        # Bad input found before training: say it in one line, and take back what this start wrote (a resumed
        # run's directory keeps everything).
        if not cfg.resume and not (run_dir / "checkpoints").exists():
            lock.undo_start(run_dir)
        if multirun:
            # The launcher records the failure and runs the other jobs; the sweep exits non-zero at the end.
            report_failed_job(error)
            raise
        exit_bad_input(str(error))
    except Exception as error:
        if multirun:
            report_failed_job(error)
        raise


def train(cfg: DictConfig, run_dir: Path, multirun: bool) -> float:
    """Train (or resume) the run in ``run_dir``, evaluate it and write its artefacts; the caller holds its lock.

    :return: the final success rate on the held-out goals, in [0, 1].
    """
    # 0. Leftovers of writes cut short by a dead trainer or evaluation; under the run lock, so no live writer's.
    for directory in (run_dir, run_dir / "checkpoints"):
        checkpoints.remove_stale_temporaries(directory)
    hydra_cfg = HydraConfig.get()
    # A sweep job's swept values (``{"seed": 1}``). Jobs side by side under joblib (its launcher has n_jobs) print
    # into one console: each line says whose it is. Other launchers give each job its own log file, or one at a time.
    swept = {}
    if multirun:
        swept = swept_values(list(hydra_cfg.overrides.task), Path(hydra_cfg.sweep.dir), hydra_cfg.sweeper.get("params"))
    if multirun and "n_jobs" in hydra_cfg.launcher:
        set_console_prefix(job_prefix(hydra_cfg.job.num, swept))

    # 1. Configuration: a resumed run continues with its own config and the state of its newest checkpoint.
    changed = {}
    if cfg.resume:
        cfg, changed = resumed_config(cfg.resume, HydraConfig.get().overrides.task)
    validate_config(cfg)
    # This job's share of the cores under its launcher: joblib, submitit_local, Ray, SLURM (rlik/ops/launchers.py).
    torch.set_num_threads(job_torch_threads(cfg.torch_threads, HydraConfig.get().launcher if multirun else None))

    # 2. Envs and model (fresh, or the newest checkpoint that reads whole, with its replay buffer and statistics).
    eval_env = make_env(cfg.env)  # the held-out goals: periodic evaluations in step 4, the final one in step 5
    if derived := derived_settings(eval_env):  # an arm's settings derived from its URDF: shown, and kept
        say(derived_settings_text(cfg.env.urdf, derived))
        check_learning_starts(cfg, eval_env.unwrapped.episode_steps)
        checkpoints.atomic_write_json(run_dir / "derived.json", derived)
    # A resumed run normalises with its checkpoint's statistics, loaded below, not fresh ones.
    env = make_training_env(
        cfg.env, cfg.n_envs, cfg.seed, cfg.normalize_observations and not cfg.resume, cfg.normalize_goals
    )
    state: dict = {}
    if cfg.resume:
        # The actor mean so far too (a resume continues it), read before tracking starts: a corrupt file touches
        # nothing.
        latest, model, average = load_newest_checkpoint(run_dir, cfg, env)
        env, state = model.get_env(), checkpoints.read_state(latest)  # env: in the checkpoint's statistics
        changes = "".join(f", algo.{key}={value}" for key, value in changed.items())
        say(f"resumed from {latest} at step {model.num_timesteps}{changes}")
        capacity = model.replay_buffer.buffer_size * model.replay_buffer.n_envs
        if grow_replay_buffer(model.replay_buffer, cfg.algo.buffer_size):  # an extended run keeps every transition
            model.buffer_size = cfg.algo.buffer_size  # what the next checkpoints' zips record
            say(f"replay buffer grown from {capacity} to {cfg.algo.buffer_size} transitions")
    else:
        model = make_model(cfg, env)
        average = None
        if cfg.algo.actor_average_start is not None:
            average = ActorAverage(int(cfg.algo.actor_average_start * cfg.total_timesteps))

    # 3. Tracking: wandb (offline unless logged in), CSV, and line logs (only the evaluations' beside a progress bar).
    # A resumed run stays in its group; a new one joins its experiment's (env and algorithm).
    run_info = checkpoints.read_json(run_dir / "run.json") if cfg.resume and (run_dir / "run.json").is_file() else {}
    config, group = resolved_config(cfg), run_info.get("wandb_group") or experiment_group(cfg)
    if multirun:  # a sweep's jobs: one group, and the values this job was given, to filter and compare by
        group = f"sweep-{Path(hydra_cfg.sweep.dir).name}"
        config["swept"] = swept
    say(f"run directory: {run_dir}")
    run = init_run(cfg.wandb, config, str(run_dir), state.get("wandb_run_id"), group, tags=experiment_tags(cfg))
    checkpoints.atomic_write_json(
        run_dir / "run.json", {"wandb_run_id": run.id if run else None, "wandb_group": run.group if run else None}
    )
    outputs = Path.cwd() / "outputs"
    if not multirun and outputs in run_dir.resolve().parents:
        checkpoints.atomic_symlink(outputs / "latest", run_dir.resolve())
    interactive = sys.stdout.isatty() if cfg.progress_bar is None else cfg.progress_bar
    formats = [ContinuedCSVOutputFormat(run_dir / "progress.csv", model.num_timesteps if cfg.resume else None)]
    formats += [WandbOutputFormat(run)] if run else []
    # On a terminal SB3's progress bar, with the periodic evaluations printed above it; elsewhere every dump.
    formats += [LineOutputFormat("eval/" if interactive else "")]
    model.set_logger(Logger(str(run_dir), formats))

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
        progress_bar=interactive,
    )
    seconds = run_state.learn_seconds(model)  # rollouts, updates, callbacks
    last_checkpoint = checkpointing.save()  # the last actor, to resume from
    if (signum := interrupts.SIGNAL_STOP.signum) is not None:  # stopped by a signal: keep what was learnt
        if run:
            run.finish(exit_code=Interrupted(signum).exit_code)  # flushes the history to disk
        env.close()
        eval_env.close()
        raise Interrupted(signum, last_checkpoint)
    if average and average.count:
        average.apply(model.policy.actor)
        say(f"final model: the mean of {average.count} actors from step {average.first_step} on")
    checkpoints.save_model(model, run_dir / "final_model.zip")
    if not (run_dir / "best_model.zip").exists():
        checkpoints.save_model(model, run_dir / "best_model.zip")

    # 5. Final evaluation on the held-out goals; its success rate is the sweep objective.
    results = evaluate(
        eval_env,
        policy_controller(model, model.get_vec_normalize_env()),
        cfg.eval.final_goals,
        cfg.eval.goal_seed,
    )
    metrics = {
        **summarise(results),
        "num_timesteps": model.num_timesteps,
        "learn_seconds": seconds,
        "learn_steps_per_second": (model.num_timesteps - start_steps) / (seconds - run_state.learn_seconds_before),
        "torch_threads": torch.get_num_threads(),
        "averaged_actors": average.count if average else 0,
    }
    episodes = episode_rows(results)
    checkpoints.atomic_write_json(run_dir / "metrics.json", {**metrics, "episodes": episodes})
    say("final evaluation: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    video = record_video(cfg, model, run_dir / "video.mp4") if cfg.wandb.video_episodes > 0 else None
    if run:
        run.summary.update({f"final/{k}": v for k, v in metrics.items()})
        logged = {"final/goals": goal_table(episodes)}
        if video and cfg.wandb.video:
            logged["final/video"] = wandb.Video(str(video), format="mp4")
        run.log({**logged, STEP_METRIC: model.num_timesteps})
        # The models as artifact versions, each with the evaluation it was picked by (success, falls: fractions;
        # distance: m); without periodic evaluations best_model.zip is the final model.
        described = {"env": cfg.env.id, "algo": cfg.algo.name}
        final = {key: metrics[key] for key in ("num_timesteps", "success_rate", "fall_rate", "final_distance_median")}
        log_model(run, run_dir / "final_model.zip", "final", {**described, **final})
        best = {}
        if run_state.best_score is not None:  # as compared: fall rate and distance negated
            success, fall, distance = run_state.best_score
            best = {"success_rate": success, "fall_rate": -fall, "final_distance_median": -distance}
        log_model(run, run_dir / "best_model.zip", "best", {**described, **best})
        run.finish()
    env.close()
    say(f"run directory: {run_dir} (evaluate it with: python evaluate.py run={run_dir})")
    return metrics["success_rate"]


def cli() -> None:
    """``python train.py`` and the ``rlik-train`` console script."""
    # Hydra makes the run directory (resume= reuses it) before main runs: check resume= first.
    if problem := check_resume_argument(sys.argv[1:]):
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    interrupts.SIGNAL_STOP.install()
    try:
        run_main(main)
    except Interrupted as interrupted:  # a signal while Hydra starts the run, before main()
        for run_dir, lock in checkpoints.RunLock.claimed.items():  # a new run's directory, claimed: taken back
            lock.undo_start(run_dir)
        print(f"interrupted ({interrupted.name}) before training started: nothing saved.", file=sys.stderr)
        sys.exit(interrupted.exit_code)
    finally:
        interrupts.SIGNAL_STOP.uninstall()


if __name__ == "__main__":
    cli()
