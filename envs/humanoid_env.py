"""``HumanoidReach-v0``: a free-standing humanoid upper body reaching while keeping its balance."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

from envs.balance import BalanceSensor, BalanceState, com_margin, support_polygon
from envs.reach_env import UrdfReachEnv

# Rejection-sampling budget for a balanced goal; with the default knobs about 60 % of draws pass.
GOAL_ATTEMPTS = 100


class HumanoidReachEnv(UrdfReachEnv):
    """Torque-controlled torso and arms of a humanoid standing on two rigid legs, free to fall.

    Actions, goals and the reward's distance term are those of ``UrdfReachEnv``. On top:

    Observation: ``UrdfReachEnv``'s joint terms, then pelvis height (m), gravity direction in the pelvis frame (3),
    pelvis linear (3, m/s) and angular (3, rad/s) velocity, COM minus the support polygon's centre
    (x, y; z is the COM height; m), ``com_margin`` (m), ZMP minus the polygon's centre (2, m) and
    ``footprint_margin`` (m).

    Reward: minus distance, minus ``torque_cost`` * mean squared action, minus
    ``balance_weight`` * max(0, ``com_margin_target`` - footprint_margin), minus ``fall_penalty`` on a fall.
    ``footprint_margin`` is the COM margin in the feet's footprint as planted at the start: the legs
    are rigid and the feet stay put, so unlike the contact polygon (which shrinks to an edge as soon
    as a foot rocks) it changes smoothly with the pose and warns before the robot starts to tip.

    A fall ends the episode: the pelvis tilts more than ``fall_tilt`` from vertical or drops below
    ``fall_height``. ``info`` adds ``fell`` (bool), ``footprint_margin`` (m), ``com_margin`` (m, positive when the COM's ground
    projection is inside the feet's support polygon) and ``zmp`` (2,), m (the centre of pressure).

    Goals: hand positions of random joint configurations whose COM, with the feet planted as at
    the start, lies at least ``com_margin_target`` inside the support polygon.

    Parameters are those of ``UrdfReachEnv`` (humanoid defaults) plus:

    :param foot_links: links whose floor contacts form the support polygon.
    :param balance_weight: weight of the COM-margin shortfall in the reward (per metre).
    :param com_margin_target: COM margin below which the balance term starts, m; also the minimum
        margin of a sampled goal's pose.
    :param fall_tilt: pelvis tilt from vertical that counts as a fall, rad.
    :param fall_height: pelvis height below which the robot has fallen, m.
    :param fall_com_margin: the robot has also fallen when ``footprint_margin`` drops below this, m
        (``None``: never). With rigid legs a COM outside the feet cannot be caught by a step: ending
        the episode there puts the penalty on the action that lost balance, not 20 steps later.
    :param fall_penalty: subtracted from the reward on the step of a fall, so falling never pays.
    """

    def __init__(
        self,
        urdf: str = "humanoid_upper_body.urdf",
        end_effector: str | Sequence[str] = "right_hand",
        joints: Sequence[str] | None = None,
        success_threshold: float = 0.02,
        frame_skip: int = 10,
        timestep: float = 1.0 / 240.0,
        goal_conditioned: bool = False,
        reward_type: str = "dense",
        torque_cost: float = 0.2,
        action_scale: float = 0.15,
        initial_joint_positions: Sequence[float] | None = None,
        initial_joint_noise: float = 0.02,
        goal_range: float = 1.0,
        fixed_base: bool = False,
        base_position: Sequence[float] = (0.0, 0.0, 0.94),
        gravity_compensation: bool = True,
        max_joint_speed: float = 30.0,
        render_mode: str | None = None,
        camera_distance: float = 2.5,
        foot_links: Sequence[str] = ("left_foot", "right_foot"),
        balance_weight: float = 20.0,
        com_margin_target: float = 0.05,
        fall_tilt: float = 0.35,
        fall_height: float = 0.7,
        fall_com_margin: float | None = 0.0,
        fall_penalty: float = 100.0,
    ) -> None:
        if not 0.0 < fall_tilt < np.pi / 2:
            raise ValueError(f"fall_tilt must be in (0, pi/2) rad, got {fall_tilt}.")
        if com_margin_target < 0:
            raise ValueError(f"com_margin_target must be >= 0 m, got {com_margin_target}.")
        self.foot_link_names = list(foot_links)
        self.balance_weight = balance_weight
        self.com_margin_target = com_margin_target
        self.fall_tilt = fall_tilt
        self.fall_height = fall_height
        self.fall_com_margin = fall_com_margin
        self.fall_penalty = fall_penalty
        super().__init__(
            urdf=urdf,
            end_effector=end_effector,
            joints=joints,
            success_threshold=success_threshold,
            frame_skip=frame_skip,
            timestep=timestep,
            goal_conditioned=goal_conditioned,
            reward_type=reward_type,
            torque_cost=torque_cost,
            action_scale=action_scale,
            initial_joint_positions=initial_joint_positions,
            initial_joint_noise=initial_joint_noise,
            goal_range=goal_range,
            fixed_base=fixed_base,
            base_position=base_position,
            gravity_compensation=gravity_compensation,
            max_joint_speed=max_joint_speed,
            render_mode=render_mode,
            camera_distance=camera_distance,
        )
        self.neutral_goal = self.task.achieved_goal()
        neutral_margin = com_margin(self.balance.center_of_mass()[:2], self.footprint)
        if neutral_margin < com_margin_target:
            self.close()
            raise ValueError(
                f"the start pose is not balanced (COM margin {neutral_margin:.3f} m < com_margin_target "
                f"{com_margin_target} m); move the start pose's COM over the feet or lower com_margin_target."
            )

    @cached_property
    def footprint(self) -> np.ndarray:
        """The feet's support polygon (k, 2), m, as planted in the start pose; goal poses and the
        balance reward are checked against it. Computed on first use, from the saved start state."""
        self.session.restore_state(self._initial_state)
        self.session.client.performCollisionDetection()
        polygon = support_polygon(self.balance.foot_contacts()[0])
        if len(polygon) < 3:
            self.close()
            raise ValueError(
                "the start pose is not balanced (the feet do not stand flat on the floor); put the soles at z = 0 "
                "with base_position."
            )
        return polygon

    @cached_property
    def balance(self) -> BalanceSensor:
        """COM and contact reader; created on first use, once the robot and the floor exist."""
        feet = [self.robot.link_index(name) for name in self.foot_link_names]
        return BalanceSensor(self.session.client, self.robot.body, feet, self.ground)

    # --- UrdfReachEnv hooks ----------------------------------------------------------------------

    def _build_world(self) -> None:
        self.ground = self.session.load_ground()

    def _robot_observation(self) -> np.ndarray:
        # Measured once per observation; _update_info, which always follows, reuses it.
        self._balance_state: BalanceState = self.balance.measure()
        state = self._balance_state
        self._footprint_margin = com_margin(state.com[:2], self.footprint)
        client = self.session.client
        position, orientation = client.getBasePositionAndOrientation(self.robot.body)
        linear, angular = client.getBaseVelocity(self.robot.body)
        rotation = np.array(client.getMatrixFromQuaternion(orientation)).reshape(3, 3)
        centre = state.polygon.mean(axis=0)
        return np.concatenate(
            [
                super()._robot_observation(),
                [position[2]],
                rotation.T @ np.array([0.0, 0.0, -1.0]),  # gravity direction in the pelvis frame
                linear,
                angular,
                state.com[:2] - centre,
                [state.com[2], state.com_margin],
                state.zmp - centre,
                [self._footprint_margin],
            ]
        )

    def _reset_robot(self) -> None:
        self._forget_contacts()
        super()._reset_robot()
        # Contacts for the new pose, so the first observation has a support polygon.
        self.session.client.performCollisionDetection()

    def _forget_contacts(self) -> None:
        """Drop the contact points (and their solver warm start) left by the previous episode.

        restoreState keeps them when the saved state has none, which makes a seeded episode
        depend on the one before. Lifting the robot out of reach makes the broadphase delete them.
        """
        client, body = self.session.client, self.robot.body
        position, orientation = client.getBasePositionAndOrientation(body)
        client.resetBasePositionAndOrientation(body, [position[0], position[1], position[2] + 100.0], orientation)
        client.performCollisionDetection()
        client.resetBasePositionAndOrientation(body, position, orientation)

    def _sample_goal(self) -> np.ndarray:
        """Hand positions of a random pose that is statically balanced on the planted feet."""
        for _ in range(GOAL_ATTEMPTS):
            goal = super()._sample_goal()
            if com_margin(self.balance.center_of_mass()[:2], self.footprint) >= self.com_margin_target:
                return goal
        return self.neutral_goal.copy()

    def _update_info(self, info: dict[str, Any]) -> None:
        info["com_margin"] = float(self._balance_state.com_margin)
        info["footprint_margin"] = float(self._footprint_margin)
        lost_balance = self.fall_com_margin is not None and self._footprint_margin < self.fall_com_margin
        info["fell"] = lost_balance or self.fell()
        info["zmp"] = self._balance_state.zmp

    def _penalty(self, info: dict[str, Any]) -> float:
        shortfall = max(0.0, self.com_margin_target - info["footprint_margin"])
        return self.balance_weight * shortfall + (self.fall_penalty if info["fell"] else 0.0)

    def _terminated(self, info: dict[str, Any]) -> bool:
        return info["fell"]

    def render(self) -> np.ndarray | None:
        """RGB image of the standing robot, seen from the front left at chest height."""
        if self.render_mode == "rgb_array":
            chest = self.robot.link_position(-1) + np.array([0.0, 0.0, 0.3])
            return self.session.render(target=chest, distance=self.camera_distance, yaw=50.0, pitch=-15.0)
        return None

    # --- balance ---------------------------------------------------------------------------------

    def pelvis_tilt(self) -> float:
        """Angle between the pelvis's z axis and the world vertical, rad."""
        return self._tilt(self.session.client.getBasePositionAndOrientation(self.robot.body)[1])

    def fell(self) -> bool:
        """Pelvis tilted beyond ``fall_tilt`` or lower than ``fall_height``."""
        position, orientation = self.session.client.getBasePositionAndOrientation(self.robot.body)
        return self._tilt(orientation) > self.fall_tilt or position[2] < self.fall_height

    def _tilt(self, orientation: Sequence[float]) -> float:
        up_z = self.session.client.getMatrixFromQuaternion(orientation)[8]  # z of the pelvis's z axis
        return float(np.arccos(np.clip(up_z, -1.0, 1.0)))
