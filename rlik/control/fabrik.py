"""The FABRIK controller: FABRIK's joint solution on the reaching limb, tracked by PD in joint space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rlik.control.base import JointTargetController
from rlik.control.fabrik_chain import FabrikChain
from rlik.envs.reach_env import UrdfReachEnv

if TYPE_CHECKING:
    from rlik.evaluation.episodes import Observation


@dataclass
class FabrikConfig:
    """``FabrikController``'s settings: its defaults, and evaluate.py's ``fabrik`` config node; the humanoid
    does better at kp=100 kd=20."""

    kp: float = 400.0  # stiffness, 1/s^2
    kd: float = 40.0  # damping, 1/s
    tolerance: float = 1e-4  # FABRIK stops this close to the goal, m
    max_iterations: int = 50
    resolve_distance: float = 1e-3  # solve again when the goal moves this far in the limb's frame, m


class FabrikController(JointTargetController):
    """FABRIK (Aristidou & Lasenby 2011) on the end effector's limb, tracked by PD in joint space.

    IK: ``solve`` places the limb's pivots with FABRIK (backward from the goal, forward from the root, until
    the end effector is within ``tolerance`` or after ``max_iterations``) and converts them to joint angles
    within the URDF limits (``FabrikChain``: of the solutions' mirror images and swivels, the one that needs no
    clipping; when all do, the clipped angles polished by coordinate descent within the limits). The robot's
    other joints (the humanoid's waist and other arm) keep the env's start pose ``initial_joint_positions``.
    Gains: the planar arm wants the defaults; the humanoid's arm does better at ``kp=100, kd=20``, which
    shake the free-standing body less.

    Control: the IK runs only when the goal changes (once per episode, started from the limb's current pose,
    so the solution is the one nearest it), and again, warm-started from the last solution, whenever the goal
    seen from the limb's root moves by more than ``resolve_distance`` (a free-standing robot sways). Every
    step in between is a cheap tracking step: ``dq = q_target - q`` in ``JointTorqueController``'s torque law
    ``M (kp * dq - kd * qdot) + g(q)``.

    ``mean_solve_time_us``: the mean wall time of one ``solve``, microseconds.

    :param env: the unwrapped reach env, with one end effector.
    :param kp: stiffness, 1/s^2 (times the mass matrix).
    :param kd: joint damping, 1/s (times the mass matrix).
    :param tolerance: FABRIK stops when the end effector is this close to the goal, m.
    :param max_iterations: FABRIK's most backward-and-forward passes per solve.
    :param resolve_distance: solve again when the goal, in the limb's root frame, has moved this far, m.
    :raises ValueError: for several end effectors, or a limb ``FabrikChain`` cannot convert (e.g. the KUKA iiwa).
    """

    def __init__(
        self,
        env: UrdfReachEnv,
        kp: float = FabrikConfig.kp,
        kd: float = FabrikConfig.kd,
        tolerance: float = FabrikConfig.tolerance,
        max_iterations: int = FabrikConfig.max_iterations,
        resolve_distance: float = FabrikConfig.resolve_distance,
    ) -> None:
        super().__init__(env, kp, kd, "FABRIK")
        self.chain = FabrikChain(env.robot, self.end_effector)
        self.tolerance, self.max_iterations, self.resolve_distance = tolerance, max_iterations, resolve_distance
        self._local_goal = np.zeros(3)  # the last solve's goal in the root frame then, m
        self._points = np.zeros((len(self.chain.lengths) + 1, 3))  # the last solution's pivots, root frame, m

    def solve(self, goal: np.ndarray) -> np.ndarray:
        """Joint targets (n_joints,), rad, that put the end effector on ``goal`` (3,), world frame, m.

        The limb's joints come from FABRIK, started from the last solution when ``goal`` is the last solve's
        goal and from the limb's current pose otherwise; the other joints keep the env's start pose. Timed.
        """
        with self.timed_solve():
            chain = self.chain
            goal = np.asarray(goal, dtype=np.float64)
            rotation_world, origin = chain.root_frame()
            local_goal = rotation_world.T @ (goal - origin)
            q_now = chain.angles()
            initial = chain.pivot_points(q_now) if self.goal_changed(goal) else self._points
            angles, self._points = chain.solve(local_goal, initial, q_now, self.tolerance, self.max_iterations)
            targets = self.env.initial_joint_positions.copy()
            targets[chain.columns] = angles
            self._goal, self._local_goal, self._targets = goal.copy(), local_goal, targets
        return targets

    def __call__(self, observation: Observation = None) -> np.ndarray:
        """Normalised action (n_joints,) in [-1, 1] for the env's current state; ``observation`` is unused."""
        goal = self.env.task.goal
        if self.goal_changed(goal):
            self.solve(goal)
        else:
            rotation_world, origin = self.chain.root_frame()
            if np.linalg.norm(rotation_world.T @ (goal - origin) - self._local_goal) > self.resolve_distance:
                self.solve(goal)
        return self.track()
