"""Train a learned-IK policy with SB3 (DDPG by default) under Hydra, logging to Weights & Biases.

    python train.py                                   # planar arm, DDPG, default budget
    python train.py env=humanoid total_timesteps=300000
    python train.py -m seed=0,1,2 algo.learning_rate=1e-3,3e-4 hydra/launcher=joblib
    python train.py resume=outputs/2026-11-23/12-00-00-123456_PlanarArmReach-v0_ddpg_seed0

Run directory: .hydra/config.yaml, run.json (wandb id), checkpoints/step_<N>/, best_model.zip,
final_model.zip, metrics.json (final evaluation), progress.csv, video.mp4, wandb/.
"""

from __future__ import annotations

import logging
import os
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
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger

from pipeline import checkpoints
from pipeline.averaging import ActorAverage
from pipeline.config import ALGO_SCHEMAS, TrainConfig, register_configs, validate_config
from pipeline.evaluation import (
    PERIODIC_SEED_OFFSET,
    episode_rows,
    evaluate,
    policy_controller,
    record_episodes,
    summarise,
)
from pipeline.factory import (
    ALGORITHMS,
    make_env,
    make_model,
    make_training_env,
    sb3_algo_kwargs,
    torch_thread_count,
)
from pipeline.interrupts import Interrupted, SignalStop, StopOnSignal
from pipeline.tracking import (
    ContinuedCSVOutputFormat,
    LineOutputFormat,
    WandbOutputFormat,
    init_run,
    resolved_config,
)

register_configs()
# A resumed run writes into its own directory and keeps its original .hydra/config.yaml.
OmegaConf.register_new_resolver("run_dir_or_resume", lambda resume, default: resume or default)
OmegaConf.register_new_resolver("hydra_subdir", lambda resume: ".hydra_resume" if resume else ".hydra")
SIGNAL_STOP = SignalStop()  # installed by __main__: SIGINT/SIGTERM end training with a checkpoint


def learn_seconds(model: BaseAlgorithm, before: float) -> float:
    """Wall seconds in ``learn()`` over the whole run: ``before`` (up to the checkpoint it resumed from)
    plus the current call's, so a resumed run's clock continues."""
    return before + (time.time_ns() - model.start_time) / 1e9


class HeldOutEvaluation(BaseCallback):
    """Every ``freq`` env steps: success on a fixed goal set; keeps ``best_model.zip`` (atomic).

    Best = highest success rate, ties broken by the lower fall rate, then the lower median distance
    (before any success, the policy that stands and gets closest is the one worth keeping).
    """

    def __init__(
        self, cfg: DictConfig, run_dir: Path, best_score: list[float] | None = None, learn_seconds_before: float = 0.0
    ) -> None:
        super().__init__()
        self.freq, self.n_goals = cfg.eval.freq, cfg.eval.periodic_goals
        self.learn_seconds_before = learn_seconds_before
        self.goal_seed = cfg.eval.goal_seed + PERIODIC_SEED_OFFSET
        self.env = make_env(cfg.env)
        self.run_dir = run_dir
        self.best_score = best_score
        self.next_eval = 0

    def _on_training_start(self) -> None:
        self.next_eval = (self.num_timesteps // self.freq + 1) * self.freq

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next_eval:
            return True
        self.next_eval += self.freq
        controller = policy_controller(self.model, self.model.get_vec_normalize_env())
        summary = summarise(evaluate(self.env, controller, self.n_goals, self.goal_seed))
        for key in ("success_rate", "final_distance_mean", "final_distance_median", "fall_rate"):
            self.logger.record(f"eval/{key}", summary[key])
        # Step and wall clock in the same CSV row, for learning curves against either.
        self.logger.record("eval/env_steps", self.num_timesteps)
        self.logger.record("eval/wall_seconds", learn_seconds(self.model, self.learn_seconds_before))
        score = [summary["success_rate"], -summary["fall_rate"], -summary["final_distance_median"]]
        if self.best_score is None or score > self.best_score:
            self.best_score = score
            checkpoints.save_model(self.model, self.run_dir / "best_model.zip")
        self.logger.dump(self.num_timesteps)
        return True


class GoalCurriculum(BaseCallback):
    """Widens the training envs' ``goal_range`` from ``curriculum.start`` to 1 as training episodes succeed.

    Promotion: at least ``min_episodes`` episodes since the last one, and a success rate of
    ``success_threshold`` over SB3's window of recent episodes (100).
    """

    def __init__(self, cfg: DictConfig, goal_range: float | None = None) -> None:
        super().__init__()
        self.cfg = cfg.curriculum
        self.goal_range = self.cfg.start if goal_range is None else goal_range
        self.episodes_at_promotion = 0

    def _on_training_start(self) -> None:
        self.training_env.env_method("set_goal_range", self.goal_range)
        self.episodes_at_promotion = self.model._episode_num

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # After the rollout's finished episodes are in SB3's success buffer (on_step comes before).
        successes = self.model.ep_success_buffer
        enough = self.model._episode_num - self.episodes_at_promotion >= self.cfg.min_episodes
        if self.goal_range < 1.0 and enough and successes and np.mean(successes) >= self.cfg.success_threshold:
            self.goal_range = min(1.0, self.goal_range + self.cfg.increment)
            self.training_env.env_method("set_goal_range", self.goal_range)
            self.episodes_at_promotion = self.model._episode_num
            successes.clear()  # the next promotion is judged on episodes with the new goals
        self.logger.record("curriculum/goal_range", self.goal_range)


class ActorAveraging(BaseCallback):
    """Adds the actor's weights to ``average`` after every update from its ``start_step`` on."""

    def __init__(self, average: ActorAverage) -> None:
        super().__init__()
        self.average = average

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # SB3 trains after each rollout, so here the actor holds the previous update's weights.
        if self.num_timesteps >= self.average.start_step:
            self.average.update(self.model.policy.actor, self.num_timesteps)


class Checkpointing(BaseCallback):
    """Every ``freq`` env steps: a crash-safe checkpoint with replay buffer and resume state."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        wandb_run_id: str | None,
        evaluation: HeldOutEvaluation,
        curriculum: GoalCurriculum | None,
        actor_average: ActorAverage | None,
    ) -> None:
        super().__init__()
        self.cfg, self.run_dir, self.wandb_run_id, self.evaluation = cfg.checkpoint, run_dir, wandb_run_id, evaluation
        self.curriculum, self.actor_average = curriculum, actor_average
        self.next_save = 0

    def _on_training_start(self) -> None:
        if self.cfg.freq > 0:  # 0: no periodic checkpoints (the final one is still written)
            self.next_save = (self.num_timesteps // self.cfg.freq + 1) * self.cfg.freq

    def save(self) -> Path:
        state = {
            "wandb_run_id": self.wandb_run_id,
            "best_score": self.evaluation.best_score,
            "learn_seconds": learn_seconds(self.model, self.evaluation.learn_seconds_before),
        }
        if self.curriculum:
            state["goal_range"] = self.curriculum.goal_range
        return checkpoints.save_checkpoint(
            self.run_dir / "checkpoints", self.model, state, self.cfg.replay_buffer, self.cfg.keep, self.actor_average
        )

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # After the rollout's transitions are in the replay buffer (on_step comes before the last is stored).
        if self.cfg.freq > 0 and self.model.num_timesteps >= self.next_save:
            self.next_save += self.cfg.freq
            self.save()


# Hyperparameters SB3 reads afresh at every update, so a resumed run may change them (say, a lower
# learning rate to fine-tune); the other algo keys shape the networks, exploration or the replay buffer.
RESUMABLE_ALGO_KEYS = (
    "learning_rate",
    "learning_rate_final",
    "learning_rate_decay_start",
    "batch_size",
    "gradient_steps",
    "train_freq",
    "learning_starts",
    "gamma",
    "tau",
    "actor_average_start",
)


def resumed_config(cfg: DictConfig) -> tuple[DictConfig, dict[str, Any]]:
    """The resumed run's own config with the keys given on this command line applied on top, and the
    algo hyperparameters these change.

    Top-level and algo keys added since the run started take their defaults (and can be set on the
    command line), so runs of an older checkout still resume.
    """
    saved = OmegaConf.merge(
        OmegaConf.structured(TrainConfig), OmegaConf.load(Path(cfg.resume) / ".hydra" / "config.yaml")
    )
    # Algo keys added since then too: the saved algo node on top of its schema.
    saved.algo = OmegaConf.merge(OmegaConf.structured(ALGO_SCHEMAS[saved.algo.name]), saved.algo)
    OmegaConf.set_struct(saved, True)
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
    merged = OmegaConf.merge(saved, OmegaConf.from_dotlist(overrides))
    merged.resume = cfg.resume
    before, after = (OmegaConf.to_container(c.algo, resolve=False) for c in (saved, merged))
    changed = {key: merged.algo[key] for key, value in after.items() if before.get(key) != value}
    if fixed := sorted(changed.keys() - set(RESUMABLE_ALGO_KEYS)):
        raise ValueError(
            f"algo.{fixed[0]} cannot change when a run resumes; drop it from the command or start a new run "
            f"(resumable: {', '.join(RESUMABLE_ALGO_KEYS)})."
        )
    return merged, changed


def record_video(cfg: DictConfig, model, path: Path) -> Path:
    """An mp4 of ``wandb.video_episodes`` held-out episodes, rendered headless."""
    env = make_env(cfg.env, render_mode="rgb_array")
    seeds = [cfg.eval.goal_seed + i for i in range(cfg.wandb.video_episodes)]
    try:
        return record_episodes(env, policy_controller(model, model.get_vec_normalize_env()), seeds, path)
    finally:
        env.close()


def check_resume_argument(argv: list[str]) -> str | None:
    """The problem with a ``resume=<run dir>`` argument, checked before Hydra creates any directory."""
    for argument in argv:
        if not argument.startswith("resume="):
            continue
        value = argument.split("=", 1)[1].strip("'\"")
        if value in ("", "null"):
            return None
        if any(a.startswith(("hydra.run.dir=", "++hydra.run.dir=")) for a in argv):
            return "resume= continues in the resumed run's own directory; drop hydra.run.dir= from the command."
        if not (Path(value) / ".hydra" / "config.yaml").is_file():
            what = "is not a run directory (no .hydra/config.yaml)" if Path(value).is_dir() else "does not exist"
            return (
                f"resume={value}: {what}; pass the directory of an earlier run, e.g. resume=outputs/<date>/<time>_..."
            )
        try:  # refused before Hydra writes its resume files into the run directory
            checkpoints.RunLock.check_free(Path(value))
        except checkpoints.RunInUse as error:
            return str(error)
    return None


def report_failed_job(error: BaseException) -> None:
    """In a multirun: one line naming the failed job, on stderr and in ``<sweep dir>/failed_jobs.txt``."""
    hydra_cfg = HydraConfig.get()
    line = f"job #{hydra_cfg.job.num} ({hydra_cfg.job.override_dirname or 'no overrides'}) failed: {error}"
    print(f"error: {line}", file=sys.stderr, flush=True)
    logging.getLogger(__name__).error(line)
    sweep_dir = Path(hydra_cfg.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / "failed_jobs.txt", "a") as handle:  # one short append per job: no interleaving
        handle.write(line.replace("\n", " ") + "\n")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        # One trainer per run directory: a second one (say, a resume= typed twice) is refused untouched.
        with checkpoints.RunLock(run_dir):
            return train(cfg, run_dir, multirun)
    except Interrupted as interrupted:
        print(interrupted_line(interrupted, run_dir), file=sys.stderr, flush=True)
        sys.exit(interrupted.exit_code)
    except (ValueError, FileNotFoundError, checkpoints.RunInUse) as error:
        # Bad input found before training: say it in one line, leave no half-made run directory (but never
        # remove a directory another process is training in).
        in_use = isinstance(error, checkpoints.RunInUse)
        if not in_use and not cfg.resume and not (run_dir / "checkpoints").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        if multirun:
            # The launcher records the failure and runs the other jobs; the sweep exits non-zero at the end.
            report_failed_job(error)
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:
        if multirun:
            report_failed_job(error)
        raise


def interrupted_line(interrupted: Interrupted, run_dir: Path) -> str:
    """What a signal left behind and how to go on, in one line."""
    resume = f"continue with: python train.py resume={run_dir}"
    if interrupted.checkpoint is not None:
        step = checkpoints.read_state(interrupted.checkpoint)["num_timesteps"]
        return f"interrupted at step {step} ({interrupted.name}): checkpoint saved; {resume}"
    latest = checkpoints.latest_checkpoint(run_dir / "checkpoints")
    if latest is None:
        return f"interrupted ({interrupted.name}) before the first checkpoint: nothing saved; start the run again."
    step = checkpoints.read_state(latest)["num_timesteps"]
    return f"interrupted ({interrupted.name}); the newest checkpoint is at step {step}; {resume}"


def train(cfg: DictConfig, run_dir: Path, multirun: bool) -> float:
    # Leftovers of writes cut short by a dead trainer or evaluation; under the run lock, so no live writer's.
    for directory in (run_dir, run_dir / "checkpoints"):
        checkpoints.remove_stale_temporaries(directory)

    # 1. Configuration: a resumed run continues with its own config.
    latest, changed = None, {}
    if cfg.resume:
        cfg, changed = resumed_config(cfg)
        latest = checkpoints.latest_checkpoint(run_dir / "checkpoints")
        if latest is None:
            raise FileNotFoundError(f"no complete checkpoint in {run_dir / 'checkpoints'}; start a new run instead.")
    validate_config(cfg)
    # A joblib sweep runs n_jobs of these processes side by side; the basic launcher runs one at a time,
    # and SLURM gives each job its own cores (the affinity mask torch_thread_count reads).
    parallel_jobs = HydraConfig.get().launcher.get("n_jobs", 1) if multirun else 1
    torch.set_num_threads(torch_thread_count(cfg.torch_threads, parallel_jobs))
    state = checkpoints.read_state(latest) if latest else {}

    # 2. Envs and model (fresh, or the latest checkpoint with its replay buffer and statistics).
    # A resumed run normalises with its checkpoint's statistics, loaded below, not fresh ones.
    env = make_training_env(
        cfg.env, cfg.n_envs, cfg.seed, cfg.normalize_observations and latest is None, cfg.normalize_goals
    )
    if latest:
        env = checkpoints.load_vec_normalize(latest, env) or env
        # The config's hyperparameters, not those pickled in the zip: the run's config (with this command
        # line's changes, which an earlier resume's command line does not carry over) is the truth.
        hyperparameters = sb3_algo_kwargs(cfg.algo, RESUMABLE_ALGO_KEYS)
        model = ALGORITHMS[cfg.algo.name].load(
            latest / checkpoints.MODEL_FILE, env=env, device=cfg.device, **hyperparameters
        )
        if (latest / checkpoints.REPLAY_FILE).exists():
            try:
                model.load_replay_buffer(latest / checkpoints.REPLAY_FILE)
            except Exception as error:  # truncated or garbled pickle
                raise ValueError(
                    f"corrupt replay buffer in {latest} ({type(error).__name__}); delete that directory "
                    "to resume from the checkpoint before it."
                ) from None
        changes = "".join(f", algo.{key}={value}" for key, value in changed.items())
        print(f"resumed from {latest} at step {model.num_timesteps}{changes}", flush=True)
    else:
        model = make_model(cfg, env)
    # The actor mean so far (a resume continues it), read before tracking starts: a corrupt one touches nothing.
    average = None
    if cfg.algo.actor_average_start is not None:
        average_start = int(cfg.algo.actor_average_start * cfg.total_timesteps)
        average = ActorAverage.load(latest / checkpoints.AVERAGE_FILE if latest else None, average_start)

    # 3. Tracking: wandb (offline unless logged in), CSV, and line logs when not on a terminal.
    group = f"sweep-{Path(HydraConfig.get().sweep.dir).name}" if multirun else None
    run = init_run(cfg.wandb, resolved_config(cfg), str(run_dir), state.get("wandb_run_id"), group)
    checkpoints.atomic_write_json(
        run_dir / "run.json", {"wandb_run_id": run.id if run else None, "wandb_group": run.group if run else None}
    )
    outputs = Path.cwd() / "outputs"
    if not multirun and outputs in run_dir.resolve().parents:
        checkpoints.atomic_symlink(outputs / "latest", run_dir.resolve())
    interactive = sys.stdout.isatty() if cfg.progress_bar is None else cfg.progress_bar
    formats = [ContinuedCSVOutputFormat(run_dir / "progress.csv", model.num_timesteps if latest else None)]
    formats += [WandbOutputFormat(run)] if run else []
    formats += [] if interactive else [LineOutputFormat()]
    model.set_logger(Logger(str(run_dir), formats))

    # 4. Learn, evaluating and checkpointing on the way.
    learn_seconds_before = state.get("learn_seconds", 0.0)  # the resumed checkpoint's clock
    evaluation = HeldOutEvaluation(cfg, run_dir, state.get("best_score"), learn_seconds_before)
    curriculum = GoalCurriculum(cfg, state.get("goal_range")) if cfg.curriculum.enabled else None
    checkpointing = Checkpointing(cfg, run_dir, run.id if run else None, evaluation, curriculum, average)
    callbacks = ([evaluation] if cfg.eval.freq > 0 else []) + ([curriculum] if curriculum else [])
    callbacks += ([ActorAveraging(average)] if average else []) + [checkpointing]  # averaged before it is saved
    # First: a stop counts its step back before the others see it (no evaluation at a step not kept).
    callbacks.insert(0, StopOnSignal(SIGNAL_STOP))
    start_steps = model.num_timesteps
    model.learn(
        total_timesteps=max(cfg.total_timesteps - model.num_timesteps, 0),
        callback=callbacks,
        log_interval=cfg.log_interval,
        reset_num_timesteps=False,
        progress_bar=interactive,
    )
    seconds = learn_seconds(model, learn_seconds_before)  # rollouts, updates, callbacks
    last_checkpoint = checkpointing.save()  # the last actor, to resume from
    if SIGNAL_STOP.signum is not None:  # stopped by a signal: keep what was learnt and how to go on
        if run:
            run.finish(exit_code=Interrupted(SIGNAL_STOP.signum).exit_code)  # flushes the history to disk
        env.close()
        raise Interrupted(SIGNAL_STOP.signum, last_checkpoint)
    if average and average.count:
        average.apply(model.policy.actor)
        print(f"final model: the mean of {average.count} actors from step {average.first_step} on", flush=True)
    checkpoints.save_model(model, run_dir / "final_model.zip")
    if not (run_dir / "best_model.zip").exists():
        checkpoints.save_model(model, run_dir / "best_model.zip")

    # 5. Final evaluation on the held-out goals; its success rate is the sweep objective.
    results = evaluate(
        evaluation.env,
        policy_controller(model, model.get_vec_normalize_env()),
        cfg.eval.final_goals,
        cfg.eval.goal_seed,
    )
    metrics = {
        **summarise(results),
        "num_timesteps": model.num_timesteps,
        "learn_seconds": seconds,
        "learn_steps_per_second": (model.num_timesteps - start_steps) / (seconds - learn_seconds_before),
        "torch_threads": torch.get_num_threads(),
        "averaged_actors": average.count if average else 0,
    }
    checkpoints.atomic_write_json(run_dir / "metrics.json", {**metrics, "episodes": episode_rows(results)})
    print("final evaluation: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)
    video = record_video(cfg, model, run_dir / "video.mp4") if cfg.wandb.video_episodes > 0 else None
    if run:
        run.summary.update({f"final/{k}": v for k, v in metrics.items()})
        if video and cfg.wandb.video:
            run.log({"final/video": wandb.Video(str(video), format="mp4")})
        run.finish()
    env.close()
    return metrics["success_rate"]


def config_error_line(error: BaseException) -> str:
    """Hydra's several-line composition error (unknown key, option or type) as one line with the fix."""
    text = f"{error}\n{error.__cause__ or ''}"
    skip = ("full_key:", "object_type=", "reference_type=", "To append", "Config search path", "provider=", "schema_")
    parts = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(skip)]
    message = " ".join(p if p.endswith((".", ":", ",")) else p + ";" for p in parts).rstrip(";")
    return f"{message}; fix the override (python train.py --cfg job shows every key and value)."


def run_main() -> None:
    """``main`` with Hydra's composition errors as one line (unless the user asked for Hydra's reports)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises composition errors instead of printing them
    try:
        main()
    except (ConfigCompositionException, OverrideParseException) as error:
        print(f"error: {config_error_line(error)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    # Hydra makes the run directory (resume= reuses it) before main runs: check resume= first.
    if problem := check_resume_argument(sys.argv[1:]):
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    SIGNAL_STOP.install()
    try:
        run_main()
    except Interrupted as interrupted:  # a signal while Hydra composes, before main() has a run directory
        print(f"interrupted ({interrupted.name}) before training started: nothing saved.", file=sys.stderr)
        sys.exit(interrupted.exit_code)
