"""Settings of a torque-controlled arm derived from its URDF and dynamics alone: no hand tuning.

``derive_arm_settings`` picks, for a robot already loaded with its reaching joints:

- a **start pose**: among poses drawn from the middle of every joint's range, the one whose end effectors
  move most freely (the largest manipulability ``sqrt(det(J J^T))`` of their position Jacobian), with the end
  effectors above the base, so that no episode starts stretched out, folded up or with axes aligned; joints the
  manipulability hardly depends on (a base's yaw) then go to the middle of their range;
- **torque scales and damping** from the joint-space mass matrix ``M`` at that pose: joint i gets viscous
  damping ``sqrt(M_ii * M_max) / SETTLE_TIME`` (in place of the URDF's; less where the physics step needs it) and
  a full action of ``damping_i * speed_i``, capped by the URDF effort limit. Every joint, heavy shoulder or light
  wrist, cruises at the same ``speed_i`` under a full action; its time constant ``M_ii / damping_i`` is
  ``SETTLE_TIME * sqrt(M_ii / M_max)``: the heaviest joint settles in ``SETTLE_TIME``, a light wrist within
  milliseconds, close to a velocity servo. Damping in proportion to ``sqrt(M_ii)`` is what one stiffness ``k``
  damps critically on every joint (``2 sqrt(k M_ii)``), and what the hand-tuned arms of this project had
  (docs/robot_zoo.md: a uniform time constant left the KUKA and the SO-101 at 93 %);
- an **episode length** that leaves time for the slowest joint to go from the start pose to its farther stop and
  settle;
- a **success threshold** of 2 cm, or a tenth of the reach for arms shorter than 20 cm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rlik.envs.robot import Robot
from rlik.envs.urdf_files import check_urdf_xml, resolve_urdf

SETTLE_TIME = 0.23  # s: the heaviest joint's time constant M_ii / damping; lighter joints settle faster
CRUISE_SPEED = 3.4  # rad/s (m/s for a prismatic joint: PRISMATIC_SPEED): a full action's steady speed
PRISMATIC_SPEED = 0.5
SUCCESS_THRESHOLD = 0.02  # m
SMALL_ARM_REACH = 0.2  # m: shorter arms succeed within a tenth of their reach instead
START_POSE_CANDIDATES = 256
START_POSE_RANGE = 0.6  # the middle fraction of each joint's range that start poses are drawn from
CENTRING_TOLERANCE = 0.95  # a joint goes to its range's middle if the manipulability keeps this fraction
WIDEST_RANGE = 2.0 * math.pi  # rad: a wider revolute range (UR's +-2 pi) reaches no new pose
STABLE_DAMPING = 0.5  # of the largest joint damping explicit integration keeps stable, 2 m_i / timestep
MIN_JOINT_INERTIA = 1e-7  # kg m^2 (kg): below it a joint moves no mass and no torque scale exists


@dataclass(frozen=True)
class ArmSettings:
    """What ``derive_arm_settings`` chose, per joint in ``robot.joint_names`` order."""

    initial_joint_positions: np.ndarray  # (n,), rad or m
    action_scale: np.ndarray  # (n,), fraction of the URDF effort limit a full action commands
    velocity_damping: np.ndarray  # (n,), N m s/rad (N s/m), in place of the URDF's
    success_threshold: float  # m
    episode_seconds: float  # s
    reach: float  # m: the largest distance from the base to an end effector over the candidate poses


def sampling_limits(robot: Robot) -> np.ndarray:
    """Joint limits (2, n) for drawing poses: the URDF's, revolute ranges cut to one turn about their middle."""
    lower, upper = robot.joint_limits
    middle = (lower + upper) / 2.0
    half = np.where(robot.revolute, np.minimum(upper - lower, WIDEST_RANGE), upper - lower) / 2.0
    return np.stack([middle - half, middle + half])


def derive_arm_settings(robot: Robot, end_effector_links: list[int], timestep: float) -> ArmSettings:
    """The settings above for ``robot`` (fixed base, its actuated joints the reaching ones), the link indices of
    its end effectors and the physics step (s). Deterministic: the same URDF gives the same settings.

    :raises ValueError: a moving link without ``<inertial>``, or a joint that moves no mass, named with the fix.
    """
    session, body = robot.session, robot.body
    urdf = check_urdf_xml(resolve_urdf(robot.urdf))
    for link in urdf.iter("link"):
        name = link.get("name")
        if link.find("inertial") is None and robot.moved_by_actuated_joints(robot.link_index(name)):
            raise ValueError(
                f"link '{name}' of {robot.urdf} has no <inertial>, so PyBullet would give it 1 kg and a unit inertia; "
                'add <inertial> with its mass and inertia (<mass value="0"/> for a frame without a body).'
            )
    columns = [robot.all_actuated.index(index) for index in robot.joint_indices]
    held = session.joint_positions(body, robot.all_actuated)  # the other movable joints keep their load pose
    lower, upper = sampling_limits(robot)
    middle, half = (lower + upper) / 2.0, (upper - lower) / 2.0
    rng = np.random.default_rng(0)
    base = robot.link_position(-1)

    def all_positions(q: np.ndarray) -> list[float]:
        full = list(held)
        for column, value in zip(columns, q):
            full[column] = float(value)
        return full

    def manipulability(q: np.ndarray) -> float | None:
        """``sqrt(det(J J^T))`` of the end effectors' position Jacobian at ``q``; None with a tip below the base."""
        robot.set_joint_positions(q)
        tips = np.array([robot.link_position(link) for link in end_effector_links])
        nonlocal reach
        reach = max(reach, float(np.linalg.norm(tips - base, axis=1).max()))
        if np.any(tips[:, 2] < base[2]):  # a tip below the mounting surface: not a pose to start from
            return None
        jacobian = np.concatenate(
            [session.link_jacobian(body, link, all_positions(q))[:, columns] for link in end_effector_links]
        )
        return math.sqrt(max(np.linalg.det(jacobian @ jacobian.T), 0.0))

    best, best_score, reach = middle, -1.0, 0.0
    candidates = middle + START_POSE_RANGE * half * rng.uniform(-1.0, 1.0, (START_POSE_CANDIDATES, robot.n_joints))
    for q in [middle, *candidates]:
        score = manipulability(q)
        if score is not None and score > best_score:
            best, best_score = q, score
    # Joints the manipulability hardly depends on (a base's yaw, a flange's roll) go to the middle of their range:
    # from there every goal is at most half a range away (from a yaw drawn near one stop, the goals past the
    # other stop were out of the episode's reach).
    for joint in range(robot.n_joints):
        centred = best.copy()
        centred[joint] = middle[joint]
        score = manipulability(centred)
        if score is not None and score >= CENTRING_TOLERANCE * best_score:
            best, best_score = centred, score
    robot.set_joint_positions(best)

    scale, damping = derive_joint_dynamics(robot, all_positions(best), timestep, CRUISE_SPEED)
    speed = scale * robot.torque_limits / damping
    travel = np.maximum(best - lower, upper - best) / speed  # s: from the start pose to the farther stop
    return ArmSettings(
        initial_joint_positions=best,
        action_scale=scale,
        velocity_damping=damping,
        success_threshold=SUCCESS_THRESHOLD if reach >= SMALL_ARM_REACH else reach / 10.0,
        episode_seconds=float(travel.max() + 5.0 * SETTLE_TIME),
        reach=reach,
    )


def derive_joint_dynamics(
    robot: Robot, positions: list[float], timestep: float, cruise_speed: float
) -> tuple[np.ndarray, np.ndarray]:
    """Torque scales and viscous damping of ``robot``'s actuated joints from its mass matrix at ``positions`` (of
    every movable joint, PyBullet's order), the other movable joints locked (as held): joint i gets damping
    ``sqrt(M_ii * M_max) / SETTLE_TIME`` and a full action of ``damping_i * speed_i``, capped by the URDF effort
    limit (see the module's docstring).

    :param timestep: the physics step, s (explicit damping must stay stable).
    :param cruise_speed: a full action's steady speed of a revolute joint, rad/s (prismatic ones: PRISMATIC_SPEED,
        m/s), or its URDF velocity limit where lower.
    :return: the fraction of each joint's effort limit a full action commands (n,), and the damping (n,),
        N m s/rad (N s/m), in place of the URDF's.
    :raises ValueError: a joint that moves no mass, named with the fix.
    """
    mass = robot.session.mass_matrix(robot.body, positions)
    base_dofs = len(mass) - len(positions)  # a floating base's 6 velocities come first
    columns = [base_dofs + robot.all_actuated.index(index) for index in robot.joint_indices]
    mass = mass[np.ix_(columns, columns)]  # the base and the held joints: locked
    inertia = np.diag(mass)
    massless = [name for name, value in zip(robot.joint_names, inertia) if not value > MIN_JOINT_INERTIA]
    if massless:
        raise ValueError(
            f"joint '{massless[0]}' of {robot.urdf} moves no mass: the links beyond it have zero mass or no "
            "<inertial>; give them <inertial> with a mass and an inertia in the URDF."
        )
    speed = np.where(robot.revolute, cruise_speed, PRISMATIC_SPEED)
    speed = np.where(robot.velocity_limits > 0, np.minimum(speed, robot.velocity_limits), speed)
    # PyBullet applies joint damping explicitly, once per physics step: it diverges beyond 2 m_i / timestep, where
    # m_i = 1 / (M^-1)_ii is the inertia joint i sees with the others free (below M_ii). A URDF's own damping can
    # be past it on a light wrist (the KUKA's 0.5 N m s/rad on its last link), so the derived damping replaces it.
    coupled_inertia = 1.0 / np.diag(np.linalg.inv(mass))
    damping = np.minimum(np.sqrt(inertia * inertia.max()) / SETTLE_TIME, STABLE_DAMPING * coupled_inertia / timestep)
    torques = np.minimum(damping * speed, robot.torque_limits)
    # a joint capped by its effort limit keeps its cruising speed, settling more slowly
    return torques / robot.torque_limits, torques / speed
