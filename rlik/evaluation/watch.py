"""``evaluate.py watch=true`` (``rlik-enjoy``): a run's policy, or a classical controller, acting in PyBullet's GUI
window in real time, on chosen goals or on random ones from a seed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from rlik.evaluation.episodes import Controller

# The GUI's text over the goal: dark green within the success threshold, orange outside it (RGB in [0, 1]).
SUCCESS_RGB, MISS_RGB = (0.0, 0.5, 0.0), (0.9, 0.4, 0.0)
HOLD_S = 1.0  # wall-clock seconds the last pose of an episode stays on screen, at watch_speed=1


def parse_goals(goals: Sequence[Any], goal_dim: int) -> list[np.ndarray]:
    """``watch_goals=``: a list of goals, or one goal, each ``goal_dim`` finite numbers (x, y, z per end effector,
    m). Raises ValueError naming the key and the shape expected."""
    try:
        array = np.asarray(goals, dtype=float)
    except (TypeError, ValueError):
        array = np.empty(0)
    if array.ndim == 1 and array.size == goal_dim:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != goal_dim or not array.size or not np.isfinite(array).all():
        example = ",".join(["0.3"] * goal_dim)
        raise ValueError(
            f"watch_goals={list(goals)!r}: each goal is {goal_dim} finite numbers (x, y, z in m per end effector), "
            f"e.g. watch_goals=[[{example}]], or one goal: watch_goals=[{example}]."
        )
    return list(array)


def watch(
    env: gym.Env, controllers: dict[str, Controller], goals: list[np.ndarray | None], seed: int, speed: float = 1.0
) -> int:
    """Each controller in turn on every goal (None: a random one; episode i resets with ``seed`` + i, as
    ``evaluate.py`` does), in ``env``'s GUI window at ``speed`` times real time, the distance written over the goal.
    Prints one line per episode; stops early, in one line, if the user closes the window. Returns the episodes
    shown."""
    unwrapped = env.unwrapped
    session, dt = unwrapped.session, unwrapped.dt
    text = -1  # the id of the GUI text, replaced at every step
    shown = 0
    for name, controller in controllers.items():
        for i, goal in enumerate(goals):
            observation, info = env.reset(seed=seed + i, options=None if goal is None else {"goal": goal})
            target = unwrapped.task.goal.reshape(-1, 3)
            label = f"{name} {i + 1}/{len(goals)}"
            start, steps, done = time.perf_counter(), 0, False
            while not done:
                if not session.connected:
                    print(f"the window was closed: stopped after {shown} episodes.")
                    return shown
                try:
                    observation, _, terminated, truncated, info = env.step(controller(observation))
                    colour = SUCCESS_RGB if info["is_success"] else MISS_RGB
                    distance = f"{label}: {100 * info['distance']:.1f} cm"
                    text = session.gui_text(distance, target[0] + [0.0, 0.0, 0.08], colour, replace=text)
                except Exception:
                    if session.connected:
                        raise
                    print(f"the window was closed: stopped after {shown} episodes.")
                    return shown
                steps, done = steps + 1, terminated or truncated
                time.sleep(max(0.0, start + steps * dt / speed - time.perf_counter()))
            shown += 1
            goal_text = ", ".join(f"{x:.3f}" for x in target.ravel())
            outcome = "reached" if info["is_success"] else "missed"
            fell = ", fell" if info.get("fell") else ""
            print(
                f"{label}: goal ({goal_text}) m {outcome}, final distance {100 * info['distance']:.1f} cm after "
                f"{steps} steps{fell}",
                flush=True,
            )
            time.sleep(HOLD_S / speed)
    return shown
