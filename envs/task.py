"""Tasks: goals, reward and episode end. ``ReachTask`` for any robot; ``BalanceTask`` adds balance for a humanoid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from rlik.envs.humanoid import HumanoidRobot
from rlik.envs.robot import Robot

REWARD_TYPES = ("dense", "sparse", "mixed")


def end_effector_names(end_effector: str | Sequence[str]) -> list[str]:
    """``end_effector`` (an env parameter) as a list of link names: one goal per link."""
    return [end_effector] if isinstance(end_effector, str) else list(end_effector)


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

    def set_goal(self, goal: np.ndarray) -> None:
        """The goal (3k,), world frame, m, until the next one; the task holds it, the env reads it.

        ``desired_goal`` is the goal the agent observes, in float32; the reward and success are computed from the
        same numbers, so HER's recomputation from observed goals matches the step's reward.
        """
        self.goal = goal
        self.desired_goal = np.asarray(goal).astype(np.float32)

    def observation_space(self, robot_dim: int, goal_conditioned: bool) -> spaces.Space:
        """The env's observation space for ``robot_dim`` robot terms: a ``Box`` of those, the end-effector positions,
        the goals and their difference; or, ``goal_conditioned``, HER's ``Dict`` (the robot terms with the
        end-effector positions as ``observation``, ``achieved_goal`` and ``desired_goal``)."""

        def box(size: int) -> spaces.Box:
            return spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)

        if not goal_conditioned:
            return box(robot_dim + 3 * self.goal_dim)
        goals = {"achieved_goal": box(self.goal_dim), "desired_goal": box(self.goal_dim)}
        return spaces.Dict({"observation": box(robot_dim + self.goal_dim), **goals})

    def prepare_start(self, start_pose: np.ndarray, start_state: int) -> None:
        """Called once the env has saved its start state (``start_state``, the robot as loaded) and chosen its start
        pose (rad or m): what the task measures there. Nothing for reaching alone."""

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

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """Reward for a batch (..., 3k) of goals; ``info`` is one dict, an array of dicts, or (from the
        HER buffer, ``rlik.training.factory.PenaltyHerReplayBuffer``) the array of their penalties (...)."""
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

    # --- what a task with more to it (balance) adds; nothing for reaching alone -------------------------

    def update_info(self, info: dict[str, Any]) -> None:
        """Add the task's quantities to a step's or reset's ``info`` (after the robot's observation was read)."""

    def state_penalty(self, info: dict[str, Any]) -> float:
        """Goal-independent cost of the state beyond the torque cost (e.g. balance), read from ``info``; 0 here."""
        return 0.0

    def is_terminated(self, info: dict[str, Any]) -> bool:
        """Whether the episode must end (e.g. a fall), read from ``info``; reaching alone never ends one."""
        return False


# Rejection-sampling budget for a balanced goal (BalanceTask.sample_goal).
GOAL_ATTEMPTS = 100


class BalanceTask(ReachTask):
    """Reaching on a free-standing humanoid without falling: balanced goals, a balance cost, falls end the episode.

    Reward: ``ReachTask``'s, with the goal-independent ``state_penalty``: ``balance_weight`` times the shortfall of
    the footprint margin (``HumanoidRobot.footprint_margin``, m) below ``com_margin_target``, plus ``fall_penalty``
    on a fall. A fall (``info["fell"]``) is the robot's (``HumanoidRobot.fell``: tilted or dropped), or the footprint
    margin below ``fall_com_margin``; it ends the episode.

    Goal kinds: a goal farther from an end effector's shoulder (``Robot.limb_root``, where it is in the start pose)
    than that arm's reach (``Robot.limb_length``) needs a lean of the torso ("lean"), else "upright"; a goal for
    several end effectors is "lean" when any of them needs one.

    :param robot: the standing humanoid.
    :param end_effectors: link names, as ``ReachTask``'s.
    :param success_threshold: metres, as ``ReachTask``'s.
    :param reward_type: as ``ReachTask``'s.
    :param torque_cost: as ``ReachTask``'s.
    :param balance_weight: weight of the footprint margin's shortfall in the penalty, per metre.
    :param com_margin_target: footprint margin below which the balance cost starts, m; also the least margin of a
        sampled goal's pose.
    :param fall_com_margin: a footprint margin below this is a fall, m (``None``: never). With rigid legs a COM
        outside the feet cannot be caught by a step: ending the episode there puts the penalty on the action that
        lost balance, not 20 steps later.
    :param fall_penalty: subtracted from the reward on the step of a fall, so falling never pays.
    """

    def __init__(
        self,
        robot: HumanoidRobot,
        end_effectors: Sequence[str],
        success_threshold: float,
        reward_type: str,
        torque_cost: float,
        balance_weight: float,
        com_margin_target: float,
        fall_com_margin: float | None,
        fall_penalty: float,
    ) -> None:
        if com_margin_target < 0:
            raise ValueError(f"com_margin_target must be >= 0 m, got {com_margin_target}.")
        super().__init__(robot, end_effectors, success_threshold, reward_type, torque_cost)
        self.robot: HumanoidRobot = robot
        self.balance_weight = balance_weight
        self.com_margin_target = com_margin_target
        self.fall_com_margin = fall_com_margin
        self.fall_penalty = fall_penalty
        self.neutral_goal = self.achieved_goal()  # the goal when no balanced pose turns up
        self.shoulder_links = [robot.limb_root(link) for link in self.end_effector_links]
        self.reaches = np.array([robot.limb_length(link) for link in self.end_effector_links])  # (k,), m
        self.measure_shoulders()
        self.goal_kind = self.kind_of(self.goal)

    def prepare_start(self, start_pose: np.ndarray, start_state: int) -> None:
        """Plant the feet as loaded and check that the start pose is balanced on them; measure its shoulders (for the
        goals' kinds). The session is back in ``start_state`` after.

        :raises ValueError: the start pose's COM margin is below ``com_margin_target``, with the fix.
        """
        session = self.robot.session
        session.restore_state(start_state)
        self.robot.plant_feet()
        self.robot.set_joint_positions(start_pose)
        margin = self.robot.footprint_com_margin()
        if margin < self.com_margin_target:
            raise ValueError(
                f"the start pose is not balanced (COM margin {margin:.3f} m < com_margin_target "
                f"{self.com_margin_target} m); move the start pose's COM over the feet or lower com_margin_target."
            )
        self.measure_shoulders()
        session.restore_state(start_state)

    def measure_shoulders(self) -> None:
        """Take the shoulders' positions now as the start pose's (the env calls it with the robot there)."""
        self.shoulders = np.array([self.robot.link_position(link) for link in self.shoulder_links])  # (k, 3), m

    def kind_of(self, goal: np.ndarray) -> str:
        """``"lean"`` when a goal (3k,), m, lies beyond its arm's reach from its shoulder, else ``"upright"``."""
        distances = np.linalg.norm(np.reshape(goal, (-1, 3)) - self.shoulders, axis=1)
        return "lean" if bool(np.any(distances > self.reaches)) else "upright"

    def set_goal(self, goal: np.ndarray) -> None:
        super().set_goal(goal)
        self.goal_kind = self.kind_of(goal)

    def sample_goal(self, rng: np.random.Generator, start: np.ndarray, goal_range: float = 1.0) -> np.ndarray:
        """``ReachTask.sample_goal``'s goal of a pose whose COM lies at least ``com_margin_target`` inside the
        footprint (statically balanced on the planted feet); after ``GOAL_ATTEMPTS`` draws without one, the
        neutral goal (the hands at the loaded pose)."""
        for _ in range(GOAL_ATTEMPTS):
            goal = super().sample_goal(rng, start, goal_range)
            if self.robot.footprint_com_margin() >= self.com_margin_target:
                return goal
        return self.neutral_goal.copy()

    def update_info(self, info: dict[str, Any]) -> None:
        """``com_margin`` and ``footprint_margin`` (m), ``fell``, ``zmp`` (2,) m, ``goal_kind``, from the robot's
        balance reading of the observation just made."""
        robot = self.robot
        info["com_margin"] = float(robot.balance_state.com_margin)
        info["footprint_margin"] = float(robot.footprint_margin)
        lost_balance = self.fall_com_margin is not None and robot.footprint_margin < self.fall_com_margin
        info["fell"] = lost_balance or robot.fell()
        info["zmp"] = robot.balance_state.zmp
        info["goal_kind"] = self.goal_kind

    def state_penalty(self, info: dict[str, Any]) -> float:
        shortfall = max(0.0, self.com_margin_target - info["footprint_margin"])
        return self.balance_weight * shortfall + (self.fall_penalty if info["fell"] else 0.0)

    def is_terminated(self, info: dict[str, Any]) -> bool:
        return info["fell"]
