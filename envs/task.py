"""The reaching task: goals, reward and success, independent of the robot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from envs.robot import Robot

REWARD_TYPES = ("dense", "sparse", "mixed")


class ReachTask:
    """Bring one or more end-effector links to goal points and hold them there.

    :param robot: the robot whose links must reach.
    :param end_effectors: link names; the goal is one 3-D point per link, concatenated (3 * k,).
    :param success_threshold: success when every end effector is this close to its goal, metres.
    :param reward_type: ``"dense"`` (minus mean distance, metres), ``"sparse"`` (-1 until success, then 0)
        or ``"mixed"`` (their sum: the dense term guides, the step at the threshold asks for precision).
    :param torque_cost: weight of the mean squared normalised action subtracted from the reward.
    """

    def __init__(
        self,
        robot: Robot,
        end_effectors: Sequence[str],
        success_threshold: float,
        reward_type: str = "dense",
        torque_cost: float = 0.0,
    ) -> None:
        if reward_type not in REWARD_TYPES:
            raise ValueError(f"unknown reward_type '{reward_type}'; choose from {REWARD_TYPES}.")
        if success_threshold <= 0:
            raise ValueError(f"success_threshold must be > 0 metres, got {success_threshold}.")
        self.robot = robot
        self.end_effector_names = list(end_effectors)
        self.end_effector_links = [robot.link_index(name) for name in self.end_effector_names]
        fixed = [
            n
            for n, link in zip(self.end_effector_names, self.end_effector_links)
            if not robot.moved_by_actuated_joints(link)
        ]
        if fixed:
            raise ValueError(
                f"end effector {fixed[0]} is not moved by any actuated joint (joints {robot.joint_names}); "
                "choose a link beyond them, e.g. the last link of the arm."
            )
        self.success_threshold = success_threshold
        self.reward_type = reward_type
        self.torque_cost = torque_cost
        self.goal = np.zeros(3 * len(self.end_effector_links))

    @property
    def goal_dim(self) -> int:
        return 3 * len(self.end_effector_links)

    def achieved_goal(self) -> np.ndarray:
        """Current end-effector positions (3 * k,), world frame, metres."""
        links = self.end_effector_links
        if len(links) == 1:  # read every env step: skip the concatenate's copy
            return self.robot.link_position(links[0])
        return np.concatenate([self.robot.link_position(link) for link in links])

    def sample_goal(self, rng: np.random.Generator, start: np.ndarray, goal_range: float = 1.0) -> np.ndarray:
        """A reachable goal: end-effector positions at a random joint configuration within limits.

        The configuration lies ``goal_range`` of the way from the joint positions ``start`` (n,) to a
        uniform draw, so goals near 0 stay close to the start pose (a curriculum widens them).
        Leaves the robot in that configuration; the caller resets it afterwards.
        """
        lower, upper = self.robot.joint_limits
        self.robot.set_joint_positions(start + goal_range * (rng.uniform(lower, upper) - start))
        return self.achieved_goal()

    def distances(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        """Per-end-effector distances (..., k), metres."""
        delta = np.asarray(achieved_goal) - np.asarray(desired_goal)
        return np.sqrt(np.square(delta.reshape(*delta.shape[:-1], -1, 3)).sum(axis=-1))

    def is_success(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        return np.all(self.distances(achieved_goal, desired_goal) < self.success_threshold, axis=-1)

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """Reward for a batch (..., 3k) of goals; ``info`` is one dict, an array of dicts, or (from the
        HER buffer, ``pipeline.factory.PenaltyHerReplayBuffer``) the array of their penalties (...)."""
        # Goal-independent costs (torque, balance) travel in info["penalty"], so that HER's
        # relabelled rewards keep them.
        if isinstance(info, dict):
            penalty = info.get("penalty", 0.0)
        elif isinstance(info, np.ndarray) and info.dtype != object:
            penalty = info
        else:
            penalty = np.array([i.get("penalty", 0.0) for i in np.ravel(info)])
        return self.reward(self.distances(achieved_goal, desired_goal), penalty)

    def reward(self, distances: np.ndarray, penalty: float | np.ndarray) -> np.ndarray:
        """Reward from per-end-effector distances (..., k), m, minus the goal-independent ``penalty`` (...)."""
        reward = np.zeros(distances.shape[:-1], dtype=distances.dtype)
        if self.reward_type in ("sparse", "mixed"):
            reward = reward + np.all(distances < self.success_threshold, axis=-1) - 1.0
        if self.reward_type in ("dense", "mixed"):
            reward = reward - distances.sum(axis=-1) / distances.shape[-1]  # the mean; ndarray.mean costs 3x more
        # float64 in both branches; a Python float would keep a float32 reward in float32.
        return reward - np.asarray(penalty, dtype=np.float64).reshape(reward.shape)

    def torque_penalty(self, action: np.ndarray) -> float:
        """``torque_cost`` times the mean squared normalised action (n,)."""
        return self.torque_cost * float(action @ action) / action.size if self.torque_cost else 0.0
