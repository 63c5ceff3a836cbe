"""``HumanoidReach-v0``: a free-standing humanoid upper body reaching while keeping its balance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rlik.envs.arm_tuning import derive_joint_dynamics
from rlik.envs.humanoid import HumanoidRobot
from rlik.envs.reach_env import UrdfReachEnv
from rlik.envs.task import BalanceTask, end_effector_names

# rad/s: a full action's steady joint speed where the torques and damping are derived. A humanoid balances, so its
# joints move slower than an arm's (3.4 rad/s): 1.5 rad/s is what HumanoidReach-v0's hand-tuned URDF damping and
# torque scale give on every one of its joints, and the damping derived from its mass matrix matches that URDF's.
BALANCING_SPEED = 1.5


class HumanoidReachEnv(UrdfReachEnv):
    """Torque-controlled torso and arms of any humanoid URDF standing on held legs, free to fall:
    ``HumanoidReach-v0`` (right hand) and ``HumanoidBimanualReach-v0`` (both hands).

    ## Description

    Any humanoid URDF (``urdf``) with its feet (``foot_links``, the support polygon), reaching hand(s)
    (``end_effector``) and actuated joints (``joints``, the waist and arms); every other movable joint (the legs) is
    held at its pose at load by a position motor at its URDF effort limit, as rigid legs. The robot stands upright
    on its feet: ``base_position=None`` puts it at the height where the feet's lowest collision point touches the
    floor, and the start pose must be balanced on them (a ``ValueError`` of one line otherwise).
    ``HumanoidReach-v0`` is the robot of ``urdf/humanoid_upper_body.urdf`` (70 kg) on rigid legs, its pelvis free
    (standing at 0.94 m); ``G1Reach-v0`` the Unitree G1 (``g1_29dof_rev_1_0.urdf`` of example-robot-data: waist 3 +
    right arm 7 joints, hand ``right_rubber_hand``, pelvis at 0.716 m); their ``Bimanual`` ids both arms (the G1's:
    17 joints); their settings in ``envs/__init__.py``. HumanoidReach-v0's
    11 joints (waist pitch, roll, yaw; per arm shoulder pitch, roll, yaw and elbow) bring the hand(s) to goal points
    without losing balance; goals beyond an arm's reach need a lean of the torso. The env composes a
    ``PyBulletSession``, a ``HumanoidRobot`` (joints, balance sensing, tilt, falls: ``envs/humanoid.py``) and a
    ``BalanceTask`` (balanced goals, the balance cost, falls end the episode: ``envs/task.py``). Balance in
    detail: docs/humanoid_balance.md.

    ## Action Space

    ``Box(-1, 1, (11,), float32)`` (one per joint of ``joints``), as ``UrdfReachEnv``'s: ``a_i`` commands
    ``action_scale`` times joint i's URDF effort limit (N m), on top of gravity-cancelling torques
    (``gravity_compensation``), against viscous damping ``velocity_damping``. Left ``None`` (as for the G1), both
    are derived from the joint-space mass matrix at the start pose (legs and pelvis locked), as ``ArmReach-v0``'s
    (``envs/arm_tuning.py``) but for 1.5 rad/s: damping ``sqrt(M_ii * M_max) / 0.23 s`` and a full action's torque
    ``1.5 rad/s`` times it (capped by the effort limit), so each joint cruises at 1.5 rad/s and the heaviest settles
    in 0.23 s. ``HumanoidReach-v0`` gives its hand-tuned ones (0.15 and ``"urdf"``, its URDF's damping: 1.5 rad/s too).

    ## Observation Space

    With ``goal_conditioned=False``, ``Box(-inf, inf, (59,), float32)`` for one hand, ``(68,)`` for two (k end
    effectors, 11 joints):

    | Num | Observation | Min | Max | Unit |
    |---|---|---|---|---|
    | 0 : 11 | cos of each joint angle, in ``robot.joint_names`` order | -1 | 1 | - |
    | 11 : 22 | sin of each joint angle | -1 | 1 | - |
    | 22 : 33 | joint velocities | -inf | inf | rad/s |
    | 33 | pelvis height | -inf | inf | m |
    | 34 : 37 | gravity direction in the pelvis frame (unit vector) | -1 | 1 | - |
    | 37 : 40 | pelvis linear velocity, world frame | -inf | inf | m/s |
    | 40 : 43 | pelvis angular velocity, world frame | -inf | inf | rad/s |
    | 43 : 45 | whole-body COM (x, y) minus the support polygon's centre | -inf | inf | m |
    | 45 | COM height | -inf | inf | m |
    | 46 | COM margin in the support polygon of the feet's contacts (negative: outside) | -inf | inf | m |
    | 47 : 49 | ZMP (centre of pressure) minus the support polygon's centre | -inf | inf | m |
    | 49 | footprint margin: the COM's margin in the feet's footprint as planted at the start | -inf | inf | m |
    | 50 : 50+3k | hand positions (x, y, z each; left before right), world frame | -inf | inf | m |
    | next 3k | goals | -inf | inf | m |
    | next 3k | goals minus hand positions | -inf | inf | m |

    With ``goal_conditioned=True``, a ``Dict``: ``observation`` (rows 0 : 50+3k), ``achieved_goal`` (3k, m) and
    ``desired_goal`` (3k, m).

    ## Rewards

    ``UrdfReachEnv``'s distance term by ``reward_type``, minus ``info["penalty"]``: ``torque_cost`` times the mean
    squared action, plus ``balance_weight`` * max(0, ``com_margin_target`` - footprint margin), plus
    ``fall_penalty`` on the step of a fall. The footprint margin changes smoothly with the pose, unlike the contact
    polygon's, which shrinks to an edge as soon as a foot rocks, so the cost warns before the robot starts to tip.

    ## Starting State

    Standing upright on the floor (or at ``base_position``), the held joints at their load pose (zeros), in
    ``initial_joint_positions`` (zeros clipped to the limits: upright, the default's arms down) plus uniform noise of
    +-``initial_joint_noise`` rad, at rest. Goals are hand positions of random joint configurations (as
    ``UrdfReachEnv``'s) whose COM, with the feet planted as at the start, lies at least ``com_margin_target``
    inside the footprint; or ``reset(options={"goal": [...]})`` (3 numbers per hand).

    ## Episode End

    - Termination: a fall, when the pelvis tilts more than ``fall_tilt`` from vertical, drops below
      ``fall_height``, or the footprint margin drops below ``fall_com_margin``.
    - Truncation: 100 steps (the registration's time limit), or an unstable simulation (``info["unstable"]``).

    ``info``: ``UrdfReachEnv``'s keys, and ``fell``, ``com_margin`` (m), ``footprint_margin`` (m), ``zmp`` (2,) m,
    and ``goal_kind``: ``"lean"`` when a goal lies farther from its shoulder (in the start pose) than the arm
    reaches stretched straight (shoulder joint to hand, from the URDF: 0.64 m), so the torso must lean, else
    ``"upright"``; for two hands, ``"lean"`` when either goal needs it.

    ## Arguments

    ``gym.make("HumanoidReach-v0", goal_conditioned=True)``; the parameters of ``UrdfReachEnv`` with humanoid
    defaults (``urdf``, ``end_effector``, ``joints`` name any humanoid's, given by the registered id;
    ``base_position`` None: standing on the floor at the origin, found as above; ``action_scale`` None: derived),
    plus:

    :param velocity_damping: the joints' viscous damping in place of the URDF's, N m s/rad, one for all joints or one
        per joint; ``"urdf"``: the URDF's own; ``None``: derived with ``action_scale`` (above). ``derived_settings()``
        returns what was derived.

    :param foot_links: links whose floor contacts form the support polygon (the soles' links, with collision shapes).
    :param balance_weight: weight of the footprint margin's shortfall in the reward (per metre).
    :param com_margin_target: footprint margin below which the balance term starts, m; also the minimum
        margin of a sampled goal's pose.
    :param fall_tilt: pelvis tilt from vertical that counts as a fall, rad.
    :param fall_height: pelvis height below which the robot has fallen, m.
    :param fall_com_margin: the robot has also fallen when the footprint margin drops below this, m
        (``None``: never). With rigid legs a COM outside the feet cannot be caught by a step: ending
        the episode there puts the penalty on the action that lost balance, not 20 steps later.
    :param fall_penalty: subtracted from the reward on the step of a fall, so falling never pays.

    ## Version History

    - v0: the first version. Since then ``info["goal_kind"]`` was added (issue 24); observations, rewards and
      episode ends are unchanged. Any humanoid URDF (issue 35): ``base_position`` defaults to None (the standing
      height found, 0.94 m for the default robot as before), the start pose's balance is checked in
      ``initial_joint_positions`` rather than the loaded pose, links without ``<inertial>`` weigh 1 g (not PyBullet's
      1 kg); the default robot's numbers are unchanged. ``action_scale`` and ``velocity_damping`` (in place of the
      URDF's) derived from the mass matrix where not given (issue 35); ``HumanoidReach-v0`` gives its own.
    """

    def __init__(
        self,
        urdf: str,
        end_effector: str | Sequence[str],
        foot_links: Sequence[str],
        joints: Sequence[str] | None = None,
        success_threshold: float = 0.02,
        frame_skip: int = 10,
        timestep: float = 1.0 / 240.0,
        goal_conditioned: bool = False,
        reward_type: str = "dense",
        torque_cost: float = 0.2,
        action_scale: float | Sequence[float] | None = None,
        velocity_damping: float | Sequence[float] | str | None = None,
        initial_joint_positions: Sequence[float] | None = None,
        initial_joint_noise: float = 0.02,
        goal_range: float = 1.0,
        fixed_base: bool = False,
        base_position: Sequence[float] | None = None,
        gravity_compensation: bool = True,
        max_joint_speed: float = 30.0,
        render_mode: str | None = None,
        camera_distance: float = 2.5,
        balance_weight: float = 20.0,
        com_margin_target: float = 0.05,
        fall_tilt: float = 0.35,
        fall_height: float = 0.7,
        fall_com_margin: float | None = 0.0,
        fall_penalty: float = 100.0,
    ) -> None:
        self._open(render_mode, frame_skip, timestep)
        with self._closed_on_error():
            self.ground = self.session.load_ground()
            robot = HumanoidRobot(
                self.session,
                urdf,
                self.ground,
                foot_links=foot_links,
                fall_tilt=fall_tilt,
                fall_height=fall_height,
                joints=joints,
                fixed_base=fixed_base,
                base_position=base_position,
            )
            task = BalanceTask(
                robot,
                end_effector_names(end_effector),
                success_threshold,
                reward_type=reward_type,
                torque_cost=torque_cost,
                balance_weight=balance_weight,
                com_margin_target=com_margin_target,
                fall_com_margin=fall_com_margin,
                fall_penalty=fall_penalty,
            )
            action_scale = self._joint_dynamics(robot, initial_joint_positions, action_scale, velocity_damping)
            self.compose(
                robot,
                task,
                action_scale=action_scale,
                velocity_damping=0.0,
                initial_joint_positions=initial_joint_positions,
                initial_joint_noise=initial_joint_noise,
                goal_range=goal_range,
                goal_conditioned=goal_conditioned,
                gravity_compensation=gravity_compensation,
                max_joint_speed=max_joint_speed,
                observe_joint_positions=False,
                camera_distance=camera_distance,
            )

    def _joint_dynamics(
        self,
        robot: HumanoidRobot,
        initial_joint_positions: Sequence[float] | None,
        action_scale: float | Sequence[float] | None,
        velocity_damping: float | Sequence[float] | str | None,
    ) -> float | Sequence[float]:
        """Set the joints' damping (given, the URDF's, or derived at the start pose) and return the action scale
        (given, or derived); the derived ones are kept for ``derived_settings``."""
        robot.set_joint_positions(robot.start_pose(initial_joint_positions))
        positions = list(self.session.joint_positions(robot.body, robot.all_actuated))
        derived_scale, derived_damping = derive_joint_dynamics(robot, positions, self.session.timestep, BALANCING_SPEED)
        self._derived = {
            key: [float(f"{v:.3g}") for v in values]
            for key, given, values in [
                ("action_scale", action_scale, derived_scale),
                ("velocity_damping", velocity_damping, derived_damping),
            ]
            if given is None
        }
        if not (isinstance(velocity_damping, str) and velocity_damping == "urdf"):  # an array compares elementwise
            given = derived_damping if velocity_damping is None else velocity_damping
            damping = None if isinstance(given, str) else robot.per_joint("velocity_damping", given)
            if damping is None or not np.all(damping >= 0):
                raise ValueError(
                    f"velocity_damping must be >= 0 (N m s/rad: one, or one per joint), 'urdf' (the URDF's) or null "
                    f"(derived), got {velocity_damping!r}."
                )
            robot.set_joint_damping(damping)  # in place of the URDF's
        return derived_scale if action_scale is None else action_scale

    def derived_settings(self) -> dict[str, Any]:
        """The torque scales and damping derived from the mass matrix (those not given), as ``env.<key>`` keys."""
        return {f"env.{key}": values for key, values in self._derived.items()}
