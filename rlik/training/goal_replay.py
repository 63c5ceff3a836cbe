"""Training goals drawn again where the policy misses: a prioritised goal sampling that names no region."""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

MISSED_GOALS_KEPT = 200  # per env: the newest misses; older ones were drawn from an older policy's weaknesses


class MissedGoalReplay(gym.Wrapper):
    """Starts a share of the training episodes at a goal the policy missed before.

    An episode that ends (terminated or truncated) without ``info["is_success"]`` leaves its goal in a list of the
    newest ``MISSED_GOALS_KEPT`` misses. A reset without a goal of its own then takes one of them, with probability
    ``probability``, and removes it from the list (a goal missed again comes back); otherwise the env samples as
    always. Goals the policy keeps missing (for the humanoid: behind the body, the waist twisted far) are thus trained
    more often than their share of the goal distribution, wherever they lie. Only the training envs are wrapped: the
    held-out evaluations sample as the env does. The list is not checkpointed: a resumed run starts it empty.

    :param env: a reaching env (``UrdfReachEnv`` or a subclass): its ``task.goal`` and ``reset(options={"goal"})``.
    :param probability: the share of resets that replay a missed goal, in [0, 1).
    """

    def __init__(self, env: gym.Env, probability: float) -> None:
        super().__init__(env)
        if not 0.0 <= probability < 1.0:
            raise ValueError(f"missed_goal_replay must be in [0, 1), got {probability}.")
        self.probability = probability
        self.missed: deque[np.ndarray] = deque(maxlen=MISSED_GOALS_KEPT)
        self.rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)  # its own stream: the env's draws stay as without replay
        options = dict(options or {})
        if self.missed and options.get("goal") is None and self.rng.random() < self.probability:
            index = int(self.rng.integers(len(self.missed)))
            options["goal"] = self.missed[index]
            del self.missed[index]
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        if (terminated or truncated) and not info.get("is_success", False):
            self.missed.append(self.env.unwrapped.task.goal.copy())
        return observation, reward, terminated, truncated, info
