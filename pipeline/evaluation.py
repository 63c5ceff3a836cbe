"""Run a controller on a fixed, seeded set of goals, summarise what it achieved, plot and film it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import imageio
import matplotlib
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from pipeline.checkpoints import atomic_write
from pipeline.export import lean_policy

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

Observation = Any
Controller = Callable[[Observation], np.ndarray]  # observation -> normalised action in [-1, 1]

# Goal sets: episode i of a set resets with seed base + i. Periodic evaluation (model selection)
# and the final evaluation (reported figures) use disjoint seeds.
PERIODIC_SEED_OFFSET = 100_000
# The goal kinds a humanoid env reports in info["goal_kind"]: does the goal need a lean of the torso?
GOAL_KINDS = ("lean", "upright")
REACHED = "reached_"  # summary keys reached_<link>: one end effector's success alone, with several end effectors


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
    control_time_us: float = float("nan")  # mean wall time of one controller call, microseconds
    goal_kind: str | None = None  # the reset's info["goal_kind"] ("lean" or "upright"); None where the env has none
    distances: list[float] = field(default_factory=list, repr=False)  # largest end-effector error per step, m
    # Per end effector (link name): within the success threshold at the end. Success needs all of them.
    reached: dict[str, bool] = field(default_factory=dict)


def policy_controller(model: BaseAlgorithm, vec_normalize: VecNormalize | None = None) -> Controller:
    """Deterministic actions of an SB3 model, observations normalised as in training: the lean actor
    (pipeline/lean.py, the same actions without ``predict``'s overhead), or ``predict`` for an actor the
    lean path does not convert. ``vec_normalize``'s statistics are read now: call again after they change."""
    try:
        return lean_policy(model, vec_normalize).act
    except ValueError:
        return predict_controller(model, vec_normalize)


def predict_controller(model: BaseAlgorithm, vec_normalize: VecNormalize | None = None) -> Controller:
    """Deterministic actions through SB3's ``model.predict``, normalising observations as in training."""

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
    goal_kind = info.get("goal_kind")
    unwrapped = env.unwrapped
    goal = unwrapped.task.goal.tolist()
    episode_return, torques, distances, successes = 0.0, [], [info["distance"]], [info["is_success"]]
    control_time, done = 0.0, False
    while not done:
        start = time.perf_counter()
        action = np.asarray(controller(observation))
        control_time += time.perf_counter() - start
        torques.append(np.abs(unwrapped.torques(action)).mean())
        observation, reward, terminated, truncated, info = env.step(action)
        episode_return += float(reward)
        distances.append(info["distance"])
        successes.append(info["is_success"])
        done = terminated or truncated
        if frames is not None:
            frames.append(env.render())
    held = np.flip(np.logical_and.accumulate(np.flip(np.array(successes))))  # success from here to the end
    task = unwrapped.task
    final_distances = task.distances(task.achieved_goal(), task.goal)
    reached = {name: bool(d < task.success_threshold) for name, d in zip(task.end_effector_names, final_distances)}
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
        control_time_us=1e6 * control_time / len(torques),
        goal_kind=goal_kind,
        distances=[float(d) for d in distances],
        reached=reached,
    )


def evaluate(env: gym.Env, controller: Controller, n_goals: int, goal_seed: int) -> list[EpisodeResult]:
    return [run_episode(env, controller, goal_seed + i) for i in range(n_goals)]


def summarise(results: list[EpisodeResult]) -> dict[str, float]:
    """Success rate, final-distance statistics (m), time to reach (s), fall rate, torque (N m), return,
    controller compute time (microseconds per control step).

    Where the episodes carry a goal kind (the humanoid envs), also per kind of ``GOAL_KINDS``: ``success_rate_<kind>``,
    ``fall_rate_<kind>`` (NaN without such goals) and ``goals_<kind>``, the number of its episodes. With several end
    effectors, also ``reached_<link>``: how often each one ends within the threshold (success needs every one).
    """
    final = np.array([r.final_distance for r in results])
    reach_times = np.array([r.time_to_reach for r in results])
    summary = {
        "success_rate": float(np.mean([r.success for r in results])),
        "final_distance_mean": float(final.mean()),
        "final_distance_median": float(np.median(final)),
        "final_distance_p95": float(np.percentile(final, 95)),
        "time_to_reach_mean": float(np.nanmean(reach_times)) if np.any(np.isfinite(reach_times)) else float("nan"),
        "fall_rate": float(np.mean([r.fell for r in results])),
        "unstable_rate": float(np.mean([r.unstable for r in results])),
        "mean_abs_torque": float(np.mean([r.mean_abs_torque for r in results])),
        "episode_return_mean": float(np.mean([r.episode_return for r in results])),
        "control_time_us_mean": float(np.mean([r.control_time_us for r in results])),
        "n_episodes": len(results),
    }
    if any(r.goal_kind is not None for r in results):
        for kind in GOAL_KINDS:
            chosen = [r for r in results if r.goal_kind == kind]
            summary[f"success_rate_{kind}"] = float(np.mean([r.success for r in chosen])) if chosen else float("nan")
            summary[f"fall_rate_{kind}"] = float(np.mean([r.fell for r in chosen])) if chosen else float("nan")
            summary[f"goals_{kind}"] = len(chosen)
    end_effectors = list(dict.fromkeys(name for r in results for name in r.reached))
    if len(end_effectors) > 1:
        for name in end_effectors:
            summary[f"{REACHED}{name}"] = float(np.mean([r.reached.get(name, False) for r in results]))
    return summary


def episode_rows(results: list[EpisodeResult]) -> list[dict[str, Any]]:
    """One dict per episode, every field of ``EpisodeResult`` (``goal_kind`` among them)."""
    return [asdict(r) for r in results]


def record_episodes(env: gym.Env, controller: Controller, seeds: list[int], path: Path) -> Path:
    """An mp4 (or gif, by ``path``'s suffix) of one episode per seed; ``env`` renders ``rgb_array``."""
    frames: list[np.ndarray] = []
    for seed in seeds:
        run_episode(env, controller, seed, frames)
    fps = env.metadata["render_fps"]
    # Written whole or not at all: a signal mid-write leaves no 0-byte or cut-off video.
    if Path(path).suffix == ".gif":
        atomic_write(Path(path), lambda tmp: imageio.mimsave(tmp, frames, duration=1000.0 / fps))
    else:
        atomic_write(Path(path), lambda tmp: imageio.mimsave(tmp, frames, fps=fps, macro_block_size=8))
    return Path(path)


def plot_distances(results: list[EpisodeResult], dt: float, threshold: float, path: Path, title: str = "") -> Path:
    """PNG of every episode's end-effector error (m, log scale) against simulated time (s), median in black."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        ax.plot(np.arange(len(r.distances)) * dt, r.distances, color="tab:red" if r.fell else "tab:blue", alpha=0.2)
    longest = max(len(r.distances) for r in results)
    padded = np.array([np.pad(r.distances, (0, longest - len(r.distances)), mode="edge") for r in results])
    ax.plot(np.arange(longest) * dt, np.median(padded, axis=0), color="black", lw=2, label="median")
    ax.axhline(threshold, color="tab:green", ls="--", label=f"success threshold {threshold:g} m")
    ax.set(yscale="log", xlabel="time (s)", ylabel="distance to goal (m)", title=title or "distance over time")
    ax.legend(loc="upper right")
    return _save(fig, path)


def plot_goals(results: list[EpisodeResult], threshold: float, path: Path, title: str = "") -> Path:
    """PNG of the goals (top view x-y and side view x-z, m), coloured by final error (m, log scale)."""
    goals = np.array([r.goal for r in results]).reshape(len(results), -1, 3)
    errors = np.repeat([r.final_distance for r in results], goals.shape[1])
    goals = goals.reshape(-1, 3)
    norm = matplotlib.colors.LogNorm(
        vmin=max(min(errors.min(), threshold / 10), 1e-6), vmax=max(errors.max(), threshold)
    )
    views = [(0, 1, "top view"), (0, 2, "side view")]
    if np.ptp(goals[:, 2]) < 1e-3:  # a planar robot's goals: the side view is a line
        views = views[:1]
    fig, axes = plt.subplots(1, len(views), figsize=(5.5 * len(views) + 1, 4.8), squeeze=False)
    axes = axes[0]
    for ax, (i, j, plane) in zip(axes, views):
        points = ax.scatter(goals[:, i], goals[:, j], c=errors, cmap="viridis_r", norm=norm, s=18, edgecolors="none")
        ax.set(xlabel="xyz"[i] + " (m)", ylabel="xyz"[j] + " (m)", title=plane, aspect="equal")
    fig.colorbar(points, ax=axes, label="final distance (m)")
    fig.suptitle(title or "goals coloured by final error")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    try:
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight"))  # whole or not at all
    finally:
        plt.close(fig)
    return Path(path)
