"""Run a controller on a fixed, seeded set of goals and summarise what it achieved."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

Observation = Any
Controller = Callable[[Observation], np.ndarray]  # observation -> normalised action in [-1, 1]

# Goal sets: episode i of a set resets with seed base + i. Periodic evaluation (model selection)
# and the final evaluation (reported figures) use disjoint seeds.
PERIODIC_SEED_OFFSET = 100_000


@dataclass
class EpisodeResult:
    """One evaluation episode. Distances in metres, times in seconds of simulated time, torques in N m."""

    seed: int
    goal: list[float]
    success: bool
    final_distance: float
    time_to_reach: float  # first time from which the goal is held to the end; NaN if not reached
    fell: bool
    unstable: bool
    episode_return: float
    mean_abs_torque: float
    steps: int
    distances: list[float] = field(default_factory=list, repr=False)


def policy_controller(model: BaseAlgorithm, vec_normalize: VecNormalize | None = None) -> Controller:
    """Deterministic actions of an SB3 model, normalising observations as in training."""

    def act(observation: Observation) -> np.ndarray:
        if vec_normalize is not None:
            observation = vec_normalize.normalize_obs(observation)
        return model.predict(observation, deterministic=True)[0]

    return act


def run_episode(
    env: gym.Env, controller: Controller, seed: int, frames: list[np.ndarray] | None = None
) -> EpisodeResult:
    """Reset with ``seed`` (which fixes goal and start pose) and run until the episode ends."""
    observation, info = env.reset(seed=seed)
    unwrapped = env.unwrapped
    goal = unwrapped.task.goal.tolist()
    episode_return, torques, distances, successes = 0.0, [], [info["distance"]], [info["is_success"]]
    done = False
    while not done:
        action = np.asarray(controller(observation))
        torques.append(np.abs(unwrapped.torques(action)).mean())
        observation, reward, terminated, truncated, info = env.step(action)
        episode_return += float(reward)
        distances.append(info["distance"])
        successes.append(info["is_success"])
        done = terminated or truncated
        if frames is not None:
            frames.append(env.render())
    held = np.flip(np.logical_and.accumulate(np.flip(np.array(successes))))  # success from here to the end
    time_to_reach = float(np.argmax(held) * unwrapped.dt) if held[-1] else float("nan")
    return EpisodeResult(
        seed=seed,
        goal=goal,
        success=bool(info["is_success"]),
        final_distance=float(info["distance"]),
        time_to_reach=time_to_reach,
        fell=bool(info.get("fell", False)),
        unstable=bool(info.get("unstable", False)),
        episode_return=episode_return,
        mean_abs_torque=float(np.mean(torques)),
        steps=len(torques),
        distances=[float(d) for d in distances],
    )


def evaluate(env: gym.Env, controller: Controller, n_goals: int, goal_seed: int) -> list[EpisodeResult]:
    return [run_episode(env, controller, goal_seed + i) for i in range(n_goals)]


def summarise(results: list[EpisodeResult]) -> dict[str, float]:
    """Success rate, final-distance statistics (m), time to reach (s), fall rate, torque (N m), return."""
    final = np.array([r.final_distance for r in results])
    reach_times = np.array([r.time_to_reach for r in results])
    return {
        "success_rate": float(np.mean([r.success for r in results])),
        "final_distance_mean": float(final.mean()),
        "final_distance_median": float(np.median(final)),
        "final_distance_p95": float(np.percentile(final, 95)),
        "time_to_reach_mean": float(np.nanmean(reach_times)) if np.any(np.isfinite(reach_times)) else float("nan"),
        "fall_rate": float(np.mean([r.fell for r in results])),
        "unstable_rate": float(np.mean([r.unstable for r in results])),
        "mean_abs_torque": float(np.mean([r.mean_abs_torque for r in results])),
        "episode_return_mean": float(np.mean([r.episode_return for r in results])),
        "n_episodes": len(results),
    }


def episode_rows(results: list[EpisodeResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
