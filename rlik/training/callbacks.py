"""The SB3 callbacks of a training run, and the ``RunState`` they share.

``RunState`` is what a checkpoint's ``state.json`` carries besides the step: the callbacks update it
(the best periodic score, the curriculum's goal range) and ``Checkpointing`` writes it, so no callback
reads another's attributes, and a resumed run starts from the state its checkpoint saved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from omegaconf import DictConfig
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from rlik.evaluation.episodes import PERIODIC_SEED_OFFSET, episode_rows, evaluate, policy_controller, summarise
from rlik.ops.tracking import goal_table
from rlik.paths import RunDir
from rlik.training import checkpoints
from rlik.training.averaging import ActorAverage


@dataclass
class RunState:
    """The run's progress beside the model and replay buffer, saved in every checkpoint's ``state.json``.

    :param wandb_run_id: the wandb run the history goes to (None: wandb disabled); a resume continues it.
    :param best_score: ``[success rate, -fall rate, -median final distance (m)]`` of ``best_model.zip``;
        None before the first periodic evaluation. Lists compare element by element, so ties in success
        are broken by the lower fall rate, then the lower distance.
    :param learn_seconds_before: wall seconds in ``learn()`` up to the checkpoint this run resumed from
        (0 for a new run), so the clock of a resumed run continues.
    :param goal_range: the curriculum's current goal range, a fraction in (0, 1]; None without curriculum.
    """

    wandb_run_id: str | None = None
    best_score: list[float] | None = None
    learn_seconds_before: float = 0.0
    goal_range: float | None = None

    @classmethod
    def resumed(cls, saved: dict[str, Any], wandb_run_id: str | None, curriculum_start: float | None) -> RunState:
        """The state a run starts from: a checkpoint's ``state.json`` (``{}`` for a new run).

        :param curriculum_start: the goal range a curriculum starts at; None when the run has no curriculum.
        """
        best = saved.get("best_score")
        return cls(
            wandb_run_id=wandb_run_id,
            # state.json writes a NaN score element (a distance of a failed simulation) as null: compare it as NaN.
            best_score=None if best is None else [float("nan") if v is None else v for v in best],
            learn_seconds_before=saved.get("learn_seconds", 0.0),
            goal_range=None if curriculum_start is None else saved.get("goal_range", curriculum_start),
        )

    def learn_seconds(self, model: BaseAlgorithm) -> float:
        """Wall seconds in ``learn()`` over the whole run: those before this run's resume plus the current call's."""
        return self.learn_seconds_before + (time.time_ns() - model.start_time) / 1e9

    def checkpoint_state(self, model: BaseAlgorithm) -> dict[str, Any]:
        """What ``state.json`` holds (``save_checkpoint`` adds the step); ``goal_range`` only with a curriculum."""
        state = {
            "wandb_run_id": self.wandb_run_id,
            "best_score": self.best_score,
            "learn_seconds": self.learn_seconds(model),
        }
        if self.goal_range is not None:
            state["goal_range"] = self.goal_range
        return state


class HeldOutEvaluation(BaseCallback):
    """Every ``eval.freq`` env steps: success on a fixed set of held-out goals, logged (and, for wandb, one table
    row per goal); keeps ``best_model.zip`` (atomic).

    Best = the highest ``RunState.best_score``: before any success, the policy that stands and gets
    closest is the one worth keeping.

    :param env: the evaluation env (one, unwrapped by SB3), reset to each held-out goal in turn.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, state: RunState, env: gym.Env) -> None:
        super().__init__()
        self.freq, self.n_goals = cfg.eval.freq, cfg.eval.periodic_goals
        self.goal_seed = cfg.eval.goal_seed + PERIODIC_SEED_OFFSET
        self.env, self.run_dir, self.state = env, run_dir, state
        self.next_eval = 0

    def _on_training_start(self) -> None:
        self.next_eval = (self.num_timesteps // self.freq + 1) * self.freq

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next_eval:
            return True
        self.next_eval += self.freq
        controller = policy_controller(self.model, self.model.get_vec_normalize_env())
        results = evaluate(self.env, controller, self.n_goals, self.goal_seed)
        summary = summarise(results)
        for key in ("success_rate", "final_distance_mean", "final_distance_median", "fall_rate"):
            self.logger.record(f"eval/{key}", summary[key])
        # One row per goal, for wandb only (WandbOutputFormat); the CSV keeps the numbers above.
        self.logger.record("eval/goals", goal_table(episode_rows(results)), exclude=("csv",))
        # Step and wall clock in the same CSV row, for learning curves against either.
        self.logger.record("eval/env_steps", self.num_timesteps)
        self.logger.record("eval/wall_seconds", self.state.learn_seconds(self.model))
        score = [summary["success_rate"], -summary["fall_rate"], -summary["final_distance_median"]]
        if self.state.best_score is None or score > self.state.best_score:
            self.state.best_score = score
            checkpoints.save_model(self.model, RunDir(self.run_dir).model("best"))
        self.logger.dump(self.num_timesteps)
        return True


class GoalCurriculum(BaseCallback):
    """Widens the training envs' goal range (``RunState.goal_range``, from ``curriculum.start``) to 1 as
    training episodes succeed.

    Promotion: at least ``min_episodes`` episodes since the last one, and a success rate of
    ``success_threshold`` over SB3's window of recent episodes (100).
    """

    def __init__(self, cfg: DictConfig, state: RunState) -> None:
        super().__init__()
        self.cfg, self.state = cfg.curriculum, state
        self.episodes_at_promotion = 0

    def _on_training_start(self) -> None:
        self.training_env.env_method("set_goal_range", self.state.goal_range)
        self.episodes_at_promotion = self.model._episode_num

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # After the rollout's finished episodes are in SB3's success buffer (on_step comes before).
        successes = self.model.ep_success_buffer
        enough = self.model._episode_num - self.episodes_at_promotion >= self.cfg.min_episodes
        if self.state.goal_range < 1.0 and enough and successes and np.mean(successes) >= self.cfg.success_threshold:
            self.state.goal_range = min(1.0, self.state.goal_range + self.cfg.increment)
            self.training_env.env_method("set_goal_range", self.state.goal_range)
            self.episodes_at_promotion = self.model._episode_num
            successes.clear()  # the next promotion is judged on episodes with the new goals
        self.logger.record("curriculum/goal_range", self.state.goal_range)


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
    """Every ``checkpoint.freq`` env steps: a crash-safe checkpoint with the replay buffer, the actor average
    and the ``RunState`` (``save`` writes one on demand: the final one, or at a signal)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, state: RunState, actor_average: ActorAverage | None) -> None:
        super().__init__()
        self.cfg, self.run_dir, self.state, self.actor_average = cfg.checkpoint, run_dir, state, actor_average
        self.next_save = 0

    def _on_training_start(self) -> None:
        if self.cfg.freq > 0:  # 0: no periodic checkpoints (the final one is still written)
            self.next_save = (self.num_timesteps // self.cfg.freq + 1) * self.cfg.freq

    def save(self) -> Path:
        """Write ``checkpoints/step_<N>/`` at the model's current step; returns it."""
        return checkpoints.save_checkpoint(
            RunDir(self.run_dir).checkpoints,
            self.model,
            self.state.checkpoint_state(self.model),
            self.cfg.replay_buffer,
            self.cfg.keep,
            self.actor_average,
        )

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # After the rollout's transitions are in the replay buffer (on_step comes before the last is stored).
        if self.cfg.freq > 0 and self.model.num_timesteps >= self.next_save:
            self.next_save += self.cfg.freq
            self.save()
