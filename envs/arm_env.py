"""``ArmReach-v0``: any fixed-base arm from its URDF and end-effector link alone."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from rlik.envs.arm_tuning import derive_arm_settings
from rlik.envs.reach_env import UrdfReachEnv
from rlik.envs.robot import Robot
from rlik.envs.task import ReachTask, end_effector_names


class ArmReachEnv(UrdfReachEnv):
    """Torque-controlled reaching with any fixed-base arm, every setting derived from its URDF: ``ArmReach-v0``.

    ## Description

    ``UrdfReachEnv`` for an arm bolted to the world, where only ``urdf`` and ``end_effector`` are required. Every
    setting left at ``None`` is derived from the URDF and the arm's dynamics (``envs/arm_tuning.py``):

    - ``joints``: the revolute and prismatic joints on the chain from the base to the end effector(s); the others
      (gripper fingers) hold their pose;
    - ``initial_joint_positions``: a start pose inside the limits, away from stretched or axis-aligned poses (the
      largest manipulability among poses drawn from the middle of the ranges, end effectors above the base);
    - ``action_scale`` and ``velocity_damping``: from the joint-space mass matrix at the start pose, so that a full
      action gives every joint a steady speed of 3.4 rad/s (or its URDF velocity limit), reached within 0.23 s on
      the heaviest joint and faster on lighter ones (time constants in proportion to the square root of the
      joint's inertia), capped by the URDF effort limit;
    - ``success_threshold``: 2 cm (a tenth of the reach for arms shorter than 20 cm);
    - ``episode_steps``: time for the slowest joint to cross half its range, and to settle.

    ``derived_settings()`` returns them as config keys (``python train.py env=arm`` prints them at start); any of
    them given as a keyword argument is used as it is. Gravity is compensated under the action by default.

    ## Action Space, Observation Space, Rewards, Starting State

    As ``UrdfReachEnv``'s, with ``observe_joint_positions`` on by default (wide revolute ranges such as a UR's
    +-2 pi make cos and sin ambiguous).

    ## Episode End

    - Termination: never.
    - Truncation: after ``episode_steps`` steps (the env's own limit: ``ArmReach-v0`` registers none), or an
      unstable simulation, as ``UrdfReachEnv``'s.

    ## Arguments

    ``gym.make("ArmReach-v0", urdf="franka_panda/panda.urdf", end_effector="panda_grasptarget")``; URDFs with
    ``package://`` mesh paths load as they are (``rlik.envs.urdf_files.resolve_urdf``). The parameters not listed here are
    ``UrdfReachEnv``'s.

    :param joints: joint names to actuate; ``None``: the chain to the end effector(s).
    :param success_threshold: metres; ``None``: derived.
    :param episode_steps: env steps per episode; ``None``: derived.
    :param action_scale: fraction of each joint's URDF effort limit that a full action commands; ``None``: derived.
    :param velocity_damping: the joints' viscous damping in place of the URDF's, N m s/rad (N s/m), one for all
        joints or one per joint; ``None``: derived.
    :param initial_joint_positions: start pose, rad or m; ``None``: derived.
    :param camera_distance: render camera distance, m; ``None``: twice the arm's reach.

    ## Version History

    - v0: the first version (issue 33); damping by the square root of each joint's inertia, 3.4 rad/s (issue 33).
    """

    def __init__(
        self,
        urdf: str,
        end_effector: str | Sequence[str],
        joints: Sequence[str] | None = None,
        success_threshold: float | None = None,
        episode_steps: int | None = None,
        frame_skip: int = 10,
        timestep: float = 1.0 / 240.0,
        goal_conditioned: bool = False,
        reward_type: str = "dense",
        torque_cost: float = 0.0,
        action_scale: float | Sequence[float] | None = None,
        velocity_damping: float | Sequence[float] | None = None,
        initial_joint_positions: Sequence[float] | None = None,
        initial_joint_noise: float = 0.1,
        goal_range: float = 1.0,
        base_position: Sequence[float] = (0.0, 0.0, 0.0),
        gravity_compensation: bool = True,
        max_joint_speed: float = 50.0,
        observe_joint_positions: bool = True,
        render_mode: str | None = None,
        camera_distance: float | None = None,
    ) -> None:
        if episode_steps is not None and episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1 (null: derived), got {episode_steps}.")
        self._given = {
            "joints": joints,
            "success_threshold": success_threshold,
            "episode_steps": episode_steps,
            "action_scale": action_scale,
            "velocity_damping": velocity_damping,
            "initial_joint_positions": initial_joint_positions,
        }
        end_effectors = end_effector_names(end_effector)
        self._open(render_mode, frame_skip, timestep)
        with self._closed_on_error():
            if render_mode is not None:  # shown on a floor that nothing touches, as UrdfReachEnv's arms
                self.session.load_ground(collide=False)
            robot = Robot(self.session, urdf, joints, True, base_position, reaching_links=end_effectors)
            threshold = 0.02 if success_threshold is None else success_threshold
            task = ReachTask(robot, end_effectors, threshold, reward_type, torque_cost)
            self.settings = settings = derive_arm_settings(robot, task.end_effector_links, self.session.timestep)
            if success_threshold is None:
                task.success_threshold = settings.success_threshold
            damping = settings.velocity_damping if velocity_damping is None else velocity_damping
            damping = robot.per_joint("velocity_damping", damping)
            if not np.all(damping >= 0):
                raise ValueError(f"velocity_damping must be >= 0 (N m s/rad), got {velocity_damping}.")
            robot.set_joint_damping(damping)  # in place of the URDF's
            self.compose(
                robot,
                task,
                action_scale=settings.action_scale if action_scale is None else action_scale,
                velocity_damping=0.0,
                initial_joint_positions=(
                    settings.initial_joint_positions if initial_joint_positions is None else initial_joint_positions
                ),
                initial_joint_noise=initial_joint_noise,
                goal_range=goal_range,
                goal_conditioned=goal_conditioned,
                gravity_compensation=gravity_compensation,
                max_joint_speed=max_joint_speed,
                observe_joint_positions=observe_joint_positions,
                camera_distance=2.0 * settings.reach if camera_distance is None else camera_distance,
            )
        self.episode_steps = episode_steps or math.ceil(self.settings.episode_seconds / self.dt)
        self._elapsed_steps = 0

    def derived_settings(self) -> dict[str, Any]:
        """The settings derived from the URDF (those not given), as ``env.<key>`` config keys and plain values."""
        settings = self.settings
        values = {
            "joints": list(self.robot.joint_names),
            "success_threshold": round(self.task.success_threshold, 4),
            "episode_steps": self.episode_steps,
            "action_scale": [float(f"{v:.3g}") for v in settings.action_scale],
            "velocity_damping": [float(f"{v:.3g}") for v in settings.velocity_damping],
            "initial_joint_positions": [round(float(v), 3) for v in settings.initial_joint_positions],
        }
        return {f"env.{key}": value for key, value in values.items() if self._given[key] is None}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self._elapsed_steps = 0
        return super().reset(seed=seed, options=options)

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = super().step(action)
        self._elapsed_steps += 1
        return observation, reward, terminated, truncated or self._elapsed_steps >= self.episode_steps, info
