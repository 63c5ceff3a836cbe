"""Run a controller on a fixed, seeded set of goals, summarise what it achieved, plot and film it."""

from __future__ import annotations

import functools
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

from rlik.policy.export import lean_policy
from rlik.training.checkpoints import atomic_write

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib import font_manager, ft2font  # noqa: E402

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
    (rlik/policy/lean.py, the same actions without ``predict``'s overhead), or ``predict`` for an actor the
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
            frames.append(annotate(env.render(), len(torques), unwrapped.dt, info, unwrapped.task.success_threshold))
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


# The video's text overlay: glyph height (px) and colours (RGB).
OVERLAY_PIXELS = 14
WHITE, GREEN, ORANGE, RED = (255, 255, 255), (90, 230, 90), (255, 170, 60), (255, 80, 80)


@functools.cache
def overlay_font() -> ft2font.FT2Font:
    """matplotlib's own monospace font (DejaVu Sans Mono) through FreeType: text drawn into a frame in a fraction of a
    millisecond, without a figure per frame or another dependency."""
    font = ft2font.FT2Font(font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans Mono")))
    font.set_size(OVERLAY_PIXELS, 72)  # points at 72 dpi: pixels
    return font


def draw_text(frame: np.ndarray, lines: list[tuple[str, tuple[int, int, int]]], margin: int = 6) -> np.ndarray:
    """A copy of ``frame`` (h, w, 3 uint8) with ``lines`` of (text, RGB colour) in its top-left corner, on a darkened
    box so that they read on any background."""
    font = overlay_font()
    glyphs = []  # (coverage in [0, 1], pixels from the bitmap's top to the baseline)
    for text, _ in lines:
        font.set_text(text, 0.0)
        font.draw_glyphs_to_bitmap(antialiased=True)
        coverage = np.asarray(font.get_image(), dtype=np.float32) / 255.0
        glyphs.append((coverage, coverage.shape[0] - font.get_descent() // 64))  # descent: 1/64 px below the baseline
    line_height = OVERLAY_PIXELS + 4
    height = min(frame.shape[0], margin + line_height * len(lines))
    width = min(frame.shape[1], 2 * margin + max(coverage.shape[1] for coverage, _ in glyphs))
    out = frame.copy()
    box = out[:height, :width].astype(np.float32) * 0.4
    for i, ((coverage, ascent), (_, colour)) in enumerate(zip(glyphs, lines)):
        # Each line on a fixed baseline: a word without tall letters does not jump up from frame to frame.
        top = max(0, margin + i * line_height + OVERLAY_PIXELS - ascent)
        rows, columns = min(coverage.shape[0], height - top), min(coverage.shape[1], width - margin)
        alpha = coverage[:rows, :columns, None]
        region = box[top : top + rows, margin : margin + columns]
        region[:] = region * (1 - alpha) + np.array(colour, dtype=np.float32) * alpha
    out[:height, :width] = box.astype(np.uint8)
    return out


def annotate(frame: np.ndarray, step: int, dt: float, info: dict[str, Any], threshold: float) -> np.ndarray:
    """A video frame with the step and simulated time (s), the end-effector distance (cm) and success (within the
    ``threshold``, m, now) written on it; a fall too, where the env reports one."""
    success = bool(info["is_success"])
    lines = [
        (f"step {step}  t {step * dt:.2f} s", WHITE),
        (f"distance {100 * info['distance']:.1f} cm", WHITE),
        (
            f"success (< {100 * threshold:g} cm)" if success else f"no success (>= {100 * threshold:g} cm)",
            GREEN if success else ORANGE,
        ),
    ]
    if info.get("fell"):
        lines.append(("fell", RED))
    return draw_text(frame, lines)


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


def padded_distances(distances: list[list[float]]) -> np.ndarray:
    """Episodes' per-step distances (m) as one (episodes, longest) array, each held at its last value after it ended."""
    longest = max(len(d) for d in distances)
    return np.array([np.pad(d, (0, longest - len(d)), mode="edge") for d in distances])


def plot_distances(results: list[EpisodeResult], dt: float, threshold: float, path: Path, title: str = "") -> Path:
    """PNG of every episode's end-effector error (m, log scale) against simulated time (s), median in black."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        ax.plot(np.arange(len(r.distances)) * dt, r.distances, color="tab:red" if r.fell else "tab:blue", alpha=0.2)
    median = np.median(padded_distances([r.distances for r in results]), axis=0)
    ax.plot(np.arange(median.size) * dt, median, color="black", lw=2, label="median")
    ax.axhline(threshold, color="tab:green", ls="--", label=f"success threshold {threshold:g} m")
    ax.set(yscale="log", xlabel="time (s)", ylabel="distance to goal (m)", title=title or "distance over time")
    ax.legend(loc="upper right")
    return _save(fig, path)


def plot_comparison(
    distances: dict[str, list[list[float]]], dt: float, threshold: float, path: Path, title: str = ""
) -> Path:
    """PNG comparing controllers on the same goals, against simulated time (s): each one's median end-effector error
    (m, log scale) with its interquartile band, and the fraction of its episodes within ``threshold`` (m).

    :param distances: controller -> its episodes' per-step distances (``EpisodeResult.distances``), m.
    """
    fig, (error_ax, success_ax) = plt.subplots(2, 1, sharex=True, figsize=(7, 6.5))
    for index, (name, episodes) in enumerate(distances.items()):
        padded = padded_distances(episodes)
        time_s = np.arange(padded.shape[1]) * dt
        low, median, high = np.percentile(padded, [25, 50, 75], axis=0)
        error_ax.plot(time_s, median, color=f"C{index}", lw=2, label=name)
        error_ax.fill_between(time_s, low, high, color=f"C{index}", alpha=0.2, lw=0)
        success_ax.plot(time_s, (padded < threshold).mean(axis=0), color=f"C{index}", lw=2, label=name)
    error_ax.axhline(threshold, color="gray", ls="--", label=f"success threshold {threshold:g} m")
    error_ax.set(yscale="log", ylabel="distance to goal (m)", title=title or "controllers on the same goals")
    error_ax.legend(loc="upper right", fontsize="small")
    success_ax.set(xlabel="time (s)", ylabel="fraction within threshold", ylim=(-0.02, 1.02))
    for ax in (error_ax, success_ax):
        ax.grid(alpha=0.3)
    error_ax.text(0.01, 0.02, "line: median, band: 25-75 %", transform=error_ax.transAxes, fontsize="small")
    return _save(fig, path)


def plot_goals(results: list[EpisodeResult], threshold: float, base: np.ndarray, path: Path, title: str = "") -> Path:
    """PNG of the goals (top view x-y and side view x-z, m), coloured by final error (m, log scale), a dot where the
    episode succeeded and a cross where it missed, and the robot's base (``base``, m) as a black square."""
    goals = np.array([r.goal for r in results]).reshape(len(results), -1, 3)
    errors = np.repeat([r.final_distance for r in results], goals.shape[1])
    reached = np.repeat([r.success for r in results], goals.shape[1])
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
        for chosen, marker, label in ((reached, "o", "success"), (~reached, "x", "miss")):
            if chosen.any():
                xy = goals[chosen][:, [i, j]].T
                label = f"{label} ({chosen.sum()})"
                points = ax.scatter(
                    *xy, c=errors[chosen], cmap="viridis_r", norm=norm, s=22, marker=marker, label=label
                )
        ax.scatter(base[i], base[j], marker="s", s=60, color="black", label="robot base")
        ax.set(xlabel="xyz"[i] + " (m)", ylabel="xyz"[j] + " (m)", title=plane, aspect="equal")
    axes[0].legend(loc="best", fontsize="small")
    fig.colorbar(points, ax=axes, label="final distance (m)")
    fig.suptitle(title or f"goals: success within {threshold:g} m, coloured by final error")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    try:
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight"))  # whole or not at all
    finally:
        plt.close(fig)
    return Path(path)
