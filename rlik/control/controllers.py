"""Classical baselines for the learned-IK policies, and IK timing.

- ``JacobianController``: task-space PD through the damped least-squares Jacobian; ignores balance.
- ``FabrikController``: FABRIK (Aristidou & Lasenby 2011) on the reaching limb, joint-space PD on its solution.
- ``BalancedJacobianController``: the humanoid's hand in the null space of a centre-of-mass task.
- ``PyBulletIKController``: PyBullet's ``calculateInverseKinematics`` once per goal, joint-space PD on its solution.

All four are callables ``observation -> normalised action`` in [-1, 1] (``torque / env.action_torques``) that
read the state from the unwrapped env, and share one torque law (``_JointTorqueController``).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pybullet

from rlik.envs.balance import com_margin
from rlik.envs.humanoid_env import HumanoidReachEnv
from rlik.envs.reach_env import UrdfReachEnv
from rlik.envs.robot import Robot
from rlik.evaluation.episodes import Observation

TWO_PI = 2.0 * math.pi


def damped_pseudo_inverse(jacobian: np.ndarray, damping: float) -> np.ndarray:
    """``J^T (J J^T + damping^2 I)^-1`` (n, m) of a Jacobian (m, n); ``damping`` in the task's units (m)."""
    return jacobian.T @ np.linalg.inv(jacobian @ jacobian.T + damping**2 * np.eye(len(jacobian)))


class _JointTorqueController:
    """What the controllers share: the robot's state, world-frame point Jacobians and the torque law

        tau = M (kp * dq - kd * qdot) + g(q)

    for a joint displacement ``dq`` (rad) toward the controller's target, with ``M`` the joint-space mass
    matrix (kg m^2) and ``g`` the gravity torques from inverse dynamics (left out when the env already adds
    them). The action is ``tau / action_torques`` clipped to [-1, 1], so it runs through the same ``env.step``
    as a policy.

    :param env: the unwrapped reach env whose robot it drives (it reads the state from the env, not the observation).
    :param kp: stiffness, 1/s^2 (times the mass matrix).
    :param kd: joint damping, 1/s (times the mass matrix).
    """

    def __init__(self, env: UrdfReachEnv, kp: float, kd: float) -> None:
        self.env, self.kp, self.kd = env, kp, kd
        robot = self.robot = env.robot
        self.client, self.body = robot.client, robot.body
        # Jacobian and mass-matrix columns: 6 base terms first on a floating base, then every movable joint.
        n_base = 0 if robot.fixed_base else 6
        dof = {index: n_base + i for i, index in enumerate(robot.all_actuated)}
        self.columns = [dof[index] for index in robot.joint_indices]
        self._zeros = [0.0] * len(robot.all_actuated)

    def link_origin_offset(self, link: int) -> list[float]:
        """A link frame's origin (3,), m, in the link's centre-of-mass frame, where calculateJacobian takes its point.

        Goals are at link frame origins.
        """
        inertial_position, inertial_orientation = self.client.getLinkState(self.body, link)[2:4]
        return list(self.client.invertTransform(inertial_position, inertial_orientation)[0])

    def positions(self) -> list[float]:
        """Every movable joint's position (rad or m), PyBullet's order: what calculateJacobian and the mass matrix take."""
        return [s[0] for s in self.client.getJointStates(self.body, self.robot.all_actuated)]

    def jacobians(self, points: Sequence[tuple[int, Sequence[float]]], q_all: list[float]) -> np.ndarray:
        """Linear Jacobians (k, 3, n_joints), m/rad, world frame, of k ``(link, point)``, the point in the link's
        centre-of-mass frame (m), over the env's joints (a floating base's own 6 velocities left out)."""
        blocks = np.array(
            [
                self.client.calculateJacobian(self.body, link, list(point), q_all, self._zeros, self._zeros)[0]
                for link, point in points
            ]
        )[:, :, self.columns]
        if not self.robot.fixed_base:
            # calculateJacobian does not take the base's pose: a floating base's Jacobians are in the base frame.
            orientation = self.client.getBasePositionAndOrientation(self.body)[1]
            blocks = np.array(self.client.getMatrixFromQuaternion(orientation)).reshape(3, 3) @ blocks
        return blocks

    def action(self, dq: np.ndarray, q_all: list[float]) -> np.ndarray:
        """Normalised action (n_joints,) in [-1, 1] for the joint displacement ``dq`` (n_joints,), rad (or m)."""
        mass = np.asarray(self.client.calculateMassMatrix(self.body, q_all))[np.ix_(self.columns, self.columns)]
        _, qdot = self.robot.joint_state()
        torques = mass @ (self.kp * dq - self.kd * qdot)
        if not self.env.gravity_compensation:  # the env adds g(q) itself when it compensates
            torques = torques + self.robot.gravity_torques()
        return np.clip(torques / self.env.action_torques, -1.0, 1.0)


class JacobianController(_JointTorqueController):
    """Task-space PD on every end effector, mapped to joint torques through the Jacobian; ignores balance.

    Per control step: the stacked end-effector error ``e`` (3k, m) becomes a joint displacement by damped
    least squares, ``dq = J^T (J J^T + lambda^2 I)^-1 e`` (rad), and the torque is ``_JointTorqueController``'s
    ``M (kp * dq - kd * qdot) + g(q)``.

    The damping grows with the error, ``lambda = max(damping, error_damping * |e|)``: far from the goal
    the step tends to the Jacobian transpose's (a gradient step on the distance, which turns the planar
    arm the short way round instead of folding it through the base into a joint limit), near it to the
    exact least-squares step (fast, precise convergence).

    :param env: the unwrapped reach env whose robot it drives (it reads the state from the env, not the observation).
    :param kp: stiffness, 1/s^2 (times the mass matrix).
    :param kd: joint damping, 1/s (times the mass matrix).
    :param damping: least damping, m; keeps ``dq`` bounded near singularities.
    :param error_damping: damping per metre of error (dimensionless).
    """

    def __init__(
        self, env: UrdfReachEnv, kp: float = 400.0, kd: float = 40.0, damping: float = 0.05, error_damping: float = 0.5
    ) -> None:
        super().__init__(env, kp, kd)
        self.damping, self.error_damping = damping, error_damping
        self.points = [(link, self.link_origin_offset(link)) for link in env.task.end_effector_links]

    def __call__(self, observation: Observation = None) -> np.ndarray:
        """Normalised action (n_joints,) in [-1, 1] for the env's current state; ``observation`` is unused."""
        q_all = self.positions()
        error = self.env.task.goal - self.env.task.achieved_goal()
        jacobian = self.jacobians(self.points, q_all).reshape(-1, len(self.columns))
        damping = max(self.damping, self.error_damping * float(np.linalg.norm(error)))
        return self.action(damped_pseudo_inverse(jacobian, damping) @ error, q_all)


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix (3, 3) of ``angle`` (rad) about the unit vector ``axis`` (3,) (Rodrigues)."""
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    t = 1.0 - c
    return np.array(
        [
            [c + x * x * t, x * y * t - z * s, x * z * t + y * s],
            [y * x * t + z * s, c + y * y * t, y * z * t - x * s],
            [z * x * t - y * s, z * y * t + x * s, c + z * z * t],
        ]
    )


def signed_angle(start: np.ndarray, end: np.ndarray, axis: np.ndarray) -> float:
    """Angle (rad, in (-pi, pi]) that turns ``start`` (3,) toward ``end`` (3,) about the unit ``axis`` (3,).

    Only the components perpendicular to ``axis`` count.
    """
    (sx, sy, sz), (ex, ey, ez), (ax, ay, az) = start.tolist(), end.tolist(), axis.tolist()
    turn = ax * (sy * ez - sz * ey) + ay * (sz * ex - sx * ez) + az * (sx * ey - sy * ex)  # axis . (start x end)
    along = (sx * ax + sy * ay + sz * az) * (ex * ax + ey * ay + ez * az)
    return math.atan2(turn, sx * ex + sy * ey + sz * ez - along)


def _place(anchor: list[float], toward: list[float], length: float) -> list[float]:
    """The point ``length`` (m) from ``anchor`` (3,) on the way to ``toward`` (3,) (FABRIK's step along a bone)."""
    distance = math.dist(anchor, toward)
    scale = length / distance if distance > 0.0 else 0.0
    return [a + scale * (t - a) for a, t in zip(anchor, toward)]


def unit(vector: np.ndarray) -> np.ndarray:
    """``vector`` (3,) scaled to length 1 (a zero vector stays zero)."""
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0.0 else vector


def nearest_turn(angle: float, now: float, lower: float, upper: float) -> tuple[float, bool]:
    """``angle`` (rad) turned by a whole turn or not: of the choices within [lower, upper], the nearest to ``now``
    (rad), else the one nearest the limits; and whether it is within them."""
    choices = (angle - TWO_PI, angle, angle + TWO_PI)
    inside = [c for c in choices if lower - 1e-9 <= c <= upper + 1e-9]
    if inside:
        return min(inside, key=lambda c: abs(c - now)), True
    return min(choices, key=lambda c: max(lower - c, c - upper)), False


def xyz_euler_angles(matrix: np.ndarray, first: float) -> list[tuple[float, float, float]]:
    """Both ``(a, b, c)`` (rad) with ``matrix`` (3, 3) = Rx(a) Ry(b) Rz(c); at the gimbal lock (cos b = 0), the
    one with ``a = first`` (the first joint keeps its angle, since only a + c or c - a is then determined)."""
    sin_b = float(np.clip(matrix[0, 2], -1.0, 1.0))
    cos_b = math.hypot(matrix[1, 2], matrix[2, 2])
    if cos_b < 1e-9:
        b = math.copysign(math.pi / 2, sin_b)
        combined = math.atan2(matrix[1, 0], matrix[1, 1])  # a + c at b = pi/2, c - a at b = -pi/2
        return [(first, b, combined - first if sin_b > 0 else combined + first)]
    a, c = math.atan2(-matrix[1, 2], matrix[2, 2]), math.atan2(-matrix[0, 1], matrix[0, 0])
    b = math.atan2(sin_b, cos_b)
    # The other branch: cos b < 0, which turns a and c by pi.
    return [(a, b, c), (a - math.copysign(math.pi, a), math.copysign(math.pi, b) - b, c - math.copysign(math.pi, c))]


class FabrikChain:
    """The reaching limb of one end effector as FABRIK sees it: pivots joined by rigid bones.

    The limb is the chain of the robot's actuated joints from the end effector up to the last link where
    another actuated limb branches off (the humanoid's torso: the other arm and the waist are not part of
    the right arm's limb), or up to the base. Joints it passes that the env does not actuate are rigid.
    The joints' frames are read from PyBullet at construction; solutions are in the frame of the first
    joint at angle 0 (the "root frame", fixed to the limb's parent link), metres.

    Two kinds of limb have a positions-to-angles conversion (``joint_angles``), and anything else raises
    ``ValueError``:

    - planar: revolute joints with parallel axes, each a pivot (the planar arm). FABRIK runs in the plane
      through the first joint, perpendicular to the axes; each angle is the turn of its bone in that plane.
    - ball and hinge: three revolute joints with a common origin and mutually orthogonal axes (a shoulder),
      then one revolute joint (an elbow) whose axis is perpendicular to both bones it joins. The elbow angle
      is the bend between the bones; the shoulder's rotation puts the upper arm on its bone and the elbow
      axis on the normal of the arm's plane, and is split into the three joint angles (Euler angles).

    ``solve`` runs FABRIK and the conversion, and polishes a solution that breaks the joint limits.

    :param robot: the robot; the limb is made of its actuated joints (``robot.joint_names``).
    :param end_effector: link index of the end effector; its frame origin is the point that reaches.
    :raises ValueError: for any other limb, naming its joints and why.
    """

    def __init__(self, robot: Robot, end_effector: int) -> None:
        client, body = robot.client, robot.body
        self.client, self.body = client, body
        infos = [client.getJointInfo(body, index) for index in range(client.getNumJoints(body))]
        self.joints = self._limb(infos, set(robot.joint_indices), end_effector)
        names = [infos[index][1].decode() for index in self.joints]
        link_name = infos[end_effector][12].decode()

        def unsupported(why: str) -> ValueError:
            return ValueError(
                f"FABRIK cannot drive '{link_name}' through joints {names}: {why}. Its conversion of positions to "
                "joint angles handles a planar chain (revolute joints with parallel axes) or a ball shoulder "
                "(three revolute joints, one origin, orthogonal axes) followed by one hinge elbow; use "
                "controller=jacobian for this robot."
            )

        if not self.joints:
            raise unsupported("the end effector has no actuated joint of its own below where another limb branches off")
        if any(infos[index][2] != pybullet.JOINT_REVOLUTE for index in self.joints):
            raise unsupported("it has a prismatic joint")
        position = {index: i for i, index in enumerate(robot.joint_indices)}
        self.columns = [position[index] for index in self.joints]  # the limb's joints among the env's
        # A joint without limits (continuous) gets infinite ones, so that clipping leaves it alone.
        limited = robot.limited_revolute[self.columns]
        self.lower = np.where(limited, robot.joint_limits[0, self.columns], -np.inf)
        self.upper = np.where(limited, robot.joint_limits[1, self.columns], np.inf)

        # Each joint's frame at angle 0 relative to the previous joint's frame (rotation, translation), read at
        # the current pose; the end effector's origin in the last joint's frame.
        self.axes = [unit(np.array(infos[index][13], dtype=np.float64)) for index in self.joints]
        q = self.angles()
        frames = [self._link_frame(index) for index in self.joints]
        previous = (frames[0][0] @ rotation(self.axes[0], -q[0]), frames[0][1])
        self.offsets: list[tuple[np.ndarray, np.ndarray]] = []
        for (rotation_world, origin), axis, angle in zip(frames, self.axes, q):
            zero = rotation_world @ rotation(axis, -angle)
            self.offsets.append((previous[0].T @ zero, previous[0].T @ (origin - previous[1])))
            previous = (rotation_world, origin)
        self.tip = previous[0].T @ (self._link_frame(end_effector)[1] - previous[1])

        # Axes and origins at the zero pose, root frame: they decide the kind of limb.
        axes, origins, orientation, origin = [], [], np.eye(3), np.zeros(3)
        for (turn, shift), axis in zip(self.offsets, self.axes):
            origin, orientation = origin + orientation @ shift, orientation @ turn
            axes.append(orientation @ axis)
            origins.append(origin)
        tip = origin + orientation @ self.tip
        starts = [0] + [i for i in range(1, len(self.joints)) if np.linalg.norm(self.offsets[i][1]) > 1e-6]
        self.pivots = [list(range(start, end)) for start, end in zip(starts, [*starts[1:], len(self.joints)])]
        if all(abs(float(axes[0] @ axis)) > 1.0 - 1e-9 for axis in axes):
            self.planar = True
            self.normal = axes[0]
            self.signs = np.array([1.0 if axis @ self.normal > 0 else -1.0 for axis in axes])
            # Bones at the zero pose, in the plane (a joint's offset along the axes does not turn with it).
            points = [self._in_plane(point) for point in [*origins, tip]]
            self.bones = [b - a for a, b in zip(points, points[1:])]
        elif [len(pivot) for pivot in self.pivots] == [3, 1]:
            self.planar = False
            shoulder = np.array(axes[:3])
            if np.abs(shoulder @ shoulder.T - np.eye(3)).max() > 1e-6:
                raise unsupported("the shoulder's three axes are not mutually orthogonal")
            # In the upper arm's frame (the third shoulder joint's): upper-arm bone, elbow axis, forearm at angle 0.
            turn, shift = self.offsets[3]
            self.upper_bone, self.elbow_axis = unit(shift), turn @ self.axes[3]
            forearm = turn @ unit(self.tip)
            if abs(self.elbow_axis @ self.upper_bone) > 1e-6 or abs(self.elbow_axis @ forearm) > 1e-6:
                raise unsupported("the elbow's axis is not perpendicular to the upper arm and the forearm")
            self.elbow_offset = signed_angle(self.upper_bone, forearm, self.elbow_axis)
            self.upper_frame = np.column_stack(
                [self.upper_bone, self.elbow_axis, np.cross(self.upper_bone, self.elbow_axis)]
            )
            # The shoulder's rotation is Rot(a0, q0) Rot(a1, q1) Rot(a2, q2) times the upper arm's zero rotation;
            # in the basis of its axes (the third flipped if need be, for a right-handed basis) it is Rx Ry Rz.
            self.shoulder_zero = self.offsets[0][0] @ self.offsets[1][0] @ self.offsets[2][0]
            self.handedness = 1.0 if np.linalg.det(shoulder) > 0 else -1.0
            self.shoulder_basis = np.column_stack([axes[0], axes[1], self.handedness * axes[2]])
            self.bones = [origins[3] - origins[0], tip - origins[3]]
        else:
            axes_text = ", ".join(np.array2string(axis, precision=2, suppress_small=True) for axis in axes)
            raise unsupported(
                f"its axes ({axes_text} at the zero pose) are not parallel and its joints do not form a ball "
                f"shoulder and a hinge elbow (pivots of {[len(pivot) for pivot in self.pivots]} joints)"
            )
        self.lengths = np.array([np.linalg.norm(bone) for bone in self.bones])
        if self.lengths.min() < 1e-6:
            raise unsupported("a bone has no length (across the joint axes, for parallel axes), so no joint aims it")

    @staticmethod
    def _limb(infos: list[tuple], actuated: set[int], end_effector: int) -> list[int]:
        """Actuated joint indices (root to tip) from ``end_effector`` up to where another actuated limb branches off."""
        parents = {info[0]: info[16] for info in infos}
        children: defaultdict[int, list[int]] = defaultdict(list)
        for index, parent in parents.items():
            children[parent].append(index)

        def drives(link: int) -> bool:
            return link in actuated or any(drives(child) for child in children[link])

        joints, link = [], end_effector
        while link != -1:
            if link in actuated:  # a link's index is that of the joint above it
                joints.append(link)
            parent = parents[link]
            if any(drives(sibling) for sibling in children[parent] if sibling != link):
                break
            link = parent
        return joints[::-1]

    def _link_frame(self, link: int) -> tuple[np.ndarray, np.ndarray]:
        """World rotation (3, 3) and origin (3,), m, of a link's URDF frame (a joint's frame for its child link)."""
        state = self.client.getLinkState(self.body, link, computeForwardKinematics=True)
        return np.array(self.client.getMatrixFromQuaternion(state[5])).reshape(3, 3), np.array(state[4])

    def _in_plane(self, point: np.ndarray) -> np.ndarray:
        """A root-frame point (3,) projected on the planar limb's plane through the first joint."""
        return point - (point @ self.normal) * self.normal

    def angles(self) -> np.ndarray:
        """The limb's joint angles (m,), rad, now."""
        return np.array([s[0] for s in self.client.getJointStates(self.body, self.joints)])

    def root_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """World rotation (3, 3) and origin (3,), m, of the root frame now (it moves with the limb's parent link)."""
        rotation_world, origin = self._link_frame(self.joints[0])
        angle = self.client.getJointState(self.body, self.joints[0])[0]
        return rotation_world @ rotation(self.axes[0], -angle), origin

    def forward(self, q: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Joint origins and frame rotations (one per joint, at the given angles), then the end effector's
        origin: ``(points (m + 1) x (3,), rotations m x (3, 3))``, root frame, m, for angles ``q`` (m,), rad."""
        points, rotations, orientation, origin = [], [], np.eye(3), np.zeros(3)
        for (turn, shift), axis, angle in zip(self.offsets, self.axes, q):
            origin = origin + orientation @ shift
            orientation = orientation @ turn @ rotation(axis, angle)
            points.append(origin)
            rotations.append(orientation)
        points.append(origin + orientation @ self.tip)
        return points, rotations

    def pivot_points(self, q: np.ndarray) -> np.ndarray:
        """The points FABRIK moves (pivots, then the end effector) (k + 1, 3), root frame, m, at angles ``q``."""
        points = self.forward(q)[0]
        chosen = [points[pivot[0]] for pivot in self.pivots] + [points[-1]]
        return np.array([self._in_plane(p) for p in chosen] if self.planar else chosen)

    def fabrik(self, points: np.ndarray, target: np.ndarray, tolerance: float, max_iterations: int) -> np.ndarray:
        """FABRIK: the pivots (k + 1, 3), root frame, m, moved from ``points`` so that the end effector meets
        ``target`` (3,) within ``tolerance`` (m), in at most ``max_iterations`` backward-and-forward passes; the
        root stays at the origin and every bone keeps its length. An out-of-reach target gets the limb
        stretched straight toward it."""
        if self.planar:
            target = self._in_plane(target)
        lengths = self.lengths.tolist()
        distance = float(np.linalg.norm(target))
        if distance >= sum(lengths):
            return np.outer(np.concatenate([[0.0], np.cumsum(lengths)]), target / distance)
        # Plain floats: numpy's per-call overhead would dominate on 3-vectors.
        points, target, last = points.tolist(), target.tolist(), len(lengths)
        for _ in range(max_iterations):
            if math.dist(points[last], target) <= tolerance:
                break
            points[last] = target  # backward: from the target to the root
            for i in range(last - 1, -1, -1):
                points[i] = _place(points[i + 1], points[i], lengths[i])
            points[0] = [0.0, 0.0, 0.0]  # forward: from the root back out
            for i in range(last):
                points[i + 1] = _place(points[i], points[i + 1], lengths[i])
        return np.array(points)

    def solve(
        self, target: np.ndarray, initial: np.ndarray, q_now: np.ndarray, tolerance: float, max_iterations: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Joint angles (m,), rad, within the limits, for the end effector at ``target`` (3,), root frame, m; and
        the solved pivots (k + 1, 3), m.

        FABRIK from the pivots ``initial`` (k + 1, 3), then ``joint_angles``. When every conversion breaks a limit
        (a goal out of reach, or inside an elbow's stop), the clipped angles no longer put the end effector where
        FABRIK did: a few sweeps of cyclic coordinate descent within the limits (``polish``) then bring it as
        near the target as the limits allow.
        """
        points = self.fabrik(initial, target, tolerance, max_iterations)
        angles, within = self.joint_angles(points, q_now)
        if not within:
            angles = self.polish(angles, target, tolerance)
        return angles, points

    def polish(self, q: np.ndarray, target: np.ndarray, tolerance: float, sweeps: int = 10) -> np.ndarray:
        """Angles ``q`` (m,), rad, within the limits, moved by cyclic coordinate descent toward ``target`` (3,),
        root frame, m: each joint in turn, from the tip, turned about its axis to bring the end effector
        nearest the target, stopped at its limits; at most ``sweeps`` rounds, until within ``tolerance`` (m) or
        a round gains less than a micrometre."""
        q, miss = q.copy(), self._miss(q, target)
        for _ in range(sweeps):
            for j in reversed(range(len(q))):
                points, rotations = self.forward(q)
                turn = signed_angle(points[-1] - points[j], target - points[j], rotations[j] @ self.axes[j])
                # The joint turns from where it is, so it stops at the limit on its way (no wrapping past it).
                q[j] = min(max(q[j] + turn, self.lower[j]), self.upper[j])
            previous, miss = miss, self._miss(q, target)
            if miss <= tolerance or previous - miss < 1e-6:
                break
        return q

    def _miss(self, q: np.ndarray, target: np.ndarray) -> float:
        """Distance (m) from the end effector at angles ``q`` (m,) to ``target`` (3,), root frame."""
        return float(np.linalg.norm(self.forward(q)[0][-1] - target))

    def joint_angles(self, points: np.ndarray, q_now: np.ndarray) -> tuple[np.ndarray, bool]:
        """Joint angles (m,), rad, within the URDF limits, that put the limb's pivots on ``points`` (k + 1, 3);
        and whether they do so without clipping.

        Solved positions leave some freedom: the planar limb's mirror image (reflected across the line from the
        root to the end effector), and the arm's swivel about that line, its elbow's bend direction and the
        shoulder's two Euler branches. Of the candidates within the limits, the nearest to ``q_now`` (m,) wins,
        so that the tracking moves least. A planar limb always weighs its mirror image (the other elbow); the arm
        tries other swivels only when FABRIK's own (the one nearest its start) breaks a limit. When every
        candidate breaks a limit, they are clipped to the limits and the one whose end effector lands nearest
        the solved one is kept.
        """
        reach = unit(points[-1])
        if self.planar:
            turns: tuple[float, ...] = (0.0, math.pi)
        elif np.linalg.norm(np.cross(points[1] - points[0], points[2] - points[1])) < 1e-9:
            turns = (0.0,)  # a straight arm only twists about its own line: no swivel to choose
        else:
            turns = (0.0, *(side * k * math.pi / 6 for k in range(1, 6) for side in (1.0, -1.0)), math.pi)
        feasible, breaking = [], []  # candidates within the limits, and beyond them
        for turn in turns:
            for angles in self._conversions(rotation(reach, turn), points, q_now):
                wrapped, within = self._wrap(angles, q_now)
                if within:
                    feasible.append(wrapped)
                else:
                    breaking.append(wrapped)
            if feasible and not self.planar:
                break
        if feasible:
            return min(feasible, key=lambda c: float(np.linalg.norm(c - q_now))), True
        clipped = [np.clip(c, self.lower, self.upper) for c in breaking]
        return min(clipped, key=lambda c: self._miss(c, points[-1])), False

    def _conversions(self, turn: np.ndarray, points: np.ndarray, q_now: np.ndarray) -> list[np.ndarray]:
        """Joint angles (m,), rad, unwrapped, of the pivots ``points`` (k + 1, 3) turned by ``turn`` (3, 3)."""
        points = points @ turn.T
        if self.planar:
            # Each bone's direction is the sum of the angles of the joints up to it (signed by their axes).
            sums = [signed_angle(b0, b1 - a, self.normal) for b0, a, b1 in zip(self.bones, points, points[1:])]
            return [self.signs * np.array([now - before for before, now in zip([0.0, *sums], sums)])]
        upper, fore = unit(points[1] - points[0]), unit(points[2] - points[1])
        normal = np.cross(upper, fore)
        if np.linalg.norm(normal) < 1e-6:  # straight (or folded) arm: keep the elbow axis where it is now
            _, rotations = self.forward(q_now)
            normal = np.cross(upper, np.cross(rotations[2] @ self.elbow_axis, upper))  # its part across the arm
            if np.linalg.norm(normal) < 1e-6:  # it lies along the arm: any axis across it will do
                normal = np.cross(upper, np.eye(3)[np.argmin(np.abs(upper))])
        results = []
        for side in (1.0, -1.0):  # the elbow axis on either side of the arm's plane: it bends one way or the other
            axis = side * unit(normal)
            elbow = signed_angle(upper, fore, axis) - self.elbow_offset
            arm = np.column_stack([upper, axis, np.cross(upper, axis)]) @ self.upper_frame.T
            shoulder = self.shoulder_basis.T @ arm @ self.shoulder_zero.T @ self.shoulder_basis
            for a, b, c in xyz_euler_angles(shoulder, first=q_now[0]):
                results.append(np.array([a, b, self.handedness * c, elbow]))
        return results

    def _wrap(self, q: np.ndarray, q_now: np.ndarray) -> tuple[np.ndarray, bool]:
        """``nearest_turn`` of every angle of ``q`` (m,), rad, near ``q_now`` (m,); and whether all are within limits."""
        turns = [nearest_turn(*args) for args in zip(q.tolist(), q_now.tolist(), self.lower, self.upper)]
        return np.array([angle for angle, _ in turns]), all(within for _, within in turns)


class FabrikController(_JointTorqueController):
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
    step in between is a cheap tracking step: ``dq = q_target - q`` in ``_JointTorqueController``'s torque law
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
        kp: float = 400.0,
        kd: float = 40.0,
        tolerance: float = 1e-4,
        max_iterations: int = 50,
        resolve_distance: float = 1e-3,
    ) -> None:
        links = env.task.end_effector_links
        if len(links) != 1:
            raise ValueError(
                f"FABRIK here drives one end effector, got {env.task.end_effector_names}; use controller=jacobian."
            )
        super().__init__(env, kp, kd)
        self.chain = FabrikChain(env.robot, links[0])
        self.tolerance, self.max_iterations, self.resolve_distance = tolerance, max_iterations, resolve_distance
        self.solve_count, self.solve_seconds = 0, 0.0
        self._goal: np.ndarray | None = None  # world goal (3,) of the last solve, m
        self._local_goal = np.zeros(3)  # the same goal in the root frame then, m
        self._points = np.zeros((len(self.chain.lengths) + 1, 3))  # the last solution's pivots, root frame, m
        self._targets = env.initial_joint_positions.copy()  # (n_joints,), rad

    @property
    def mean_solve_time_us(self) -> float:
        """Mean wall time of one ``solve`` so far, microseconds (NaN before the first)."""
        return 1e6 * self.solve_seconds / self.solve_count if self.solve_count else float("nan")

    def solve(self, goal: np.ndarray) -> np.ndarray:
        """Joint targets (n_joints,), rad, that put the end effector on ``goal`` (3,), world frame, m.

        The limb's joints come from FABRIK, started from the last solution when ``goal`` is the last solve's
        goal and from the limb's current pose otherwise; the other joints keep the env's start pose. Timed.
        """
        start = time.perf_counter()
        chain = self.chain
        goal = np.asarray(goal, dtype=np.float64)
        rotation_world, origin = chain.root_frame()
        local_goal = rotation_world.T @ (goal - origin)
        q_now = chain.angles()
        same_goal = self._goal is not None and np.array_equal(goal, self._goal)
        initial = self._points if same_goal else chain.pivot_points(q_now)
        angles, self._points = chain.solve(local_goal, initial, q_now, self.tolerance, self.max_iterations)
        targets = self.env.initial_joint_positions.copy()
        targets[chain.columns] = angles
        self._goal, self._local_goal, self._targets = goal.copy(), local_goal, targets
        self.solve_seconds += time.perf_counter() - start
        self.solve_count += 1
        return targets

    def __call__(self, observation: Observation = None) -> np.ndarray:
        """Normalised action (n_joints,) in [-1, 1] for the env's current state; ``observation`` is unused."""
        goal = self.env.task.goal
        if self._goal is None or not np.array_equal(goal, self._goal):
            self.solve(goal)
        else:
            rotation_world, origin = self.chain.root_frame()
            if np.linalg.norm(rotation_world.T @ (goal - origin) - self._local_goal) > self.resolve_distance:
                self.solve(goal)
        q, _ = self.robot.joint_state()
        return self.action(self._targets - q, self.positions())


class BalancedJacobianController(_JointTorqueController):
    """The humanoid's hands reaching in the null space of a balance task: task-priority differential IK.

    Per control step, at velocity level (a joint displacement ``dq``, rad, for this step), with damped
    pseudo-inverses ``#`` (``damped_pseudo_inverse``):

        dq = J1# e1 + N1 (J2 N1)# (e2 - J2 J1# e1),    N1 = I - J1# J1

    Task 1, balance: the whole-body centre of mass's horizontal position (2,), m. ``J1`` (2, n_joints) is the
    mass-weighted mean of every link's COM Jacobian (calculateJacobian at each link's centre of mass; the
    pelvis and the rigid legs do not move with the joints, since the planted feet pin them, so their terms are
    zero and only count in the total mass). ``e1`` pushes the COM toward the centre of the planted feet's
    footprint (``env.robot.footprint``, the polygon of the env's fall rule) by the shortfall of its margin
    (``rlik.envs.balance.com_margin``) below ``margin``. The task is weighted by an activation ``h`` in [0, 1], 1 at
    a margin of ``margin`` or less, 0 from ``margin + band`` on, linear between (``J1`` and ``e1`` both times
    ``h``): well inside the feet the hands move the COM freely; nearer the edge the task first holds the COM
    (``e1`` is 0 there, so it only blocks motion), then pulls it back.

    Task 2, reach: the stacked hand errors ``e2`` (3k,), m, and their Jacobian ``J2`` (3k, n_joints), damped as
    in ``JacobianController`` (``max(damping, error_damping * |e2|)``), so far from the goal the step tends
    to a gradient step.

    Torque: ``_JointTorqueController``'s ``M (kp * dq - kd * qdot) + g(q)``.

    :param env: the unwrapped standing humanoid (``HumanoidReachEnv``).
    :param kp: stiffness, 1/s^2 (times the mass matrix).
    :param kd: joint damping, 1/s (times the mass matrix).
    :param damping: least damping of the reach task, m.
    :param error_damping: the reach task's damping per metre of error (dimensionless).
    :param com_damping: damping of the balance task, m; small next to the COM Jacobian's ~0.2 m/rad of the
        waist, large next to the arms' ~0.02 m/rad, so that balance is kept with the torso, not by flailing arms.
    :param margin: COM margin (m) below which the balance task pulls the COM back; ``None``:
        ``env.task.com_margin_target`` (every sampled goal's pose has at least this margin).
    :param band: margin range (m) above ``margin`` over which the balance task fades out.
    :raises ValueError: for an env without feet (not a ``HumanoidReachEnv``).
    """

    def __init__(
        self,
        env: HumanoidReachEnv,
        kp: float = 100.0,
        kd: float = 20.0,
        damping: float = 0.05,
        error_damping: float = 0.5,
        com_damping: float = 0.02,
        margin: float | None = None,
        band: float = 0.05,
    ) -> None:
        if not isinstance(env, HumanoidReachEnv):
            raise ValueError(
                f"jacobian_balance balances a standing humanoid (env=humanoid or humanoid_bimanual), got "
                f"{type(env).__name__}; use controller=jacobian."
            )
        super().__init__(env, kp, kd)
        self.damping, self.error_damping, self.com_damping = damping, error_damping, com_damping
        self.margin = env.task.com_margin_target if margin is None else margin
        self.band = band
        self.hands = [(link, self.link_origin_offset(link)) for link in env.task.end_effector_links]
        # Links that move with the env's joints: those with one of them above.
        balance = env.robot.balance
        moving = [link for link in balance.link_indices if self.robot.moved_by_actuated_joints(link)]
        self.com_links = [(link, [0.0, 0.0, 0.0]) for link in moving]
        mass_by_link = dict(zip([-1, *balance.link_indices], balance.masses))
        self.com_weights = np.array([mass_by_link[link] for link, _ in self.com_links]) / balance.total_mass
        self.centre = env.robot.footprint.mean(axis=0)  # (2,), m

    def __call__(self, observation: Observation = None) -> np.ndarray:
        """Normalised action (n_joints,) in [-1, 1] for the env's current state; ``observation`` is unused."""
        env, n = self.env, len(self.columns)
        q_all = self.positions()
        jacobians = self.jacobians(self.hands + self.com_links, q_all)
        k = len(self.hands)
        reach_jacobian = jacobians[:k].reshape(-1, n)
        com_jacobian = np.tensordot(self.com_weights, jacobians[k:, :2], axes=1)  # (2, n_joints)
        com = env.robot.balance.center_of_mass()[:2]
        margin = com_margin(com, env.robot.footprint)
        activation = float(np.clip((self.margin + self.band - margin) / self.band, 0.0, 1.0))
        com_error = unit(self.centre - com) * max(0.0, self.margin - margin)
        balance_jacobian = activation * com_jacobian
        balance_inverse = damped_pseudo_inverse(balance_jacobian, self.com_damping)
        dq_balance = balance_inverse @ (activation * com_error)
        null_space = np.eye(n) - balance_inverse @ balance_jacobian
        reach_error = env.task.goal - env.task.achieved_goal()
        damping = max(self.damping, self.error_damping * float(np.linalg.norm(reach_error)))
        projected = reach_jacobian @ null_space
        dq_reach = null_space @ damped_pseudo_inverse(projected, damping) @ (reach_error - reach_jacobian @ dq_balance)
        return self.action(dq_balance + dq_reach, q_all)


class PyBulletIKController(_JointTorqueController):
    """PyBullet's own IK (``calculateInverseKinematics``: damped least squares, started from the current pose)
    solved once per goal, its joint solution tracked by PD in joint space, as ``FabrikController`` tracks FABRIK's.

    The solve runs ``max_iterations`` steps or until ``residual`` (m); the solution is clipped to the URDF limits,
    and joints outside the env's keep their pose. ``mean_solve_time_us``: the mean wall time of one solve.

    :param env: the unwrapped reach env, with one end effector.
    :param kp: stiffness, 1/s^2 (times the mass matrix).
    :param kd: joint damping, 1/s (times the mass matrix).
    :param max_iterations: PyBullet's most IK iterations per solve.
    :param residual: PyBullet's IK stops when the end effector is this close to the goal, m.
    """

    def __init__(
        self, env: UrdfReachEnv, kp: float = 400.0, kd: float = 40.0, max_iterations: int = 100, residual: float = 1e-4
    ) -> None:
        links = env.task.end_effector_links
        if len(links) != 1:
            raise ValueError(
                f"pybullet_ik here drives one end effector, got {env.task.end_effector_names}; use controller=jacobian."
            )
        super().__init__(env, kp, kd)
        self.link, self.max_iterations, self.residual = links[0], max_iterations, residual
        self.solve_count, self.solve_seconds = 0, 0.0
        self._goal: np.ndarray | None = None
        self._targets = env.initial_joint_positions.copy()  # (n_joints,), rad or m

    @property
    def mean_solve_time_us(self) -> float:
        """Mean wall time of one solve so far, microseconds (NaN before the first)."""
        return 1e6 * self.solve_seconds / self.solve_count if self.solve_count else float("nan")

    def solve(self, goal: np.ndarray) -> np.ndarray:
        """Joint targets (n_joints,), rad or m, within the limits, for the end effector at ``goal`` (3,), m. Timed."""
        start = time.perf_counter()
        q_all = self.client.calculateInverseKinematics(
            self.body,
            self.link,
            list(goal),
            maxNumIterations=self.max_iterations,
            residualThreshold=self.residual,
        )
        self._targets = np.clip(np.asarray(q_all)[self.columns], *self.robot.joint_limits)
        self._goal = np.array(goal, dtype=np.float64)
        self.solve_seconds += time.perf_counter() - start
        self.solve_count += 1
        return self._targets

    def __call__(self, observation: Observation = None) -> np.ndarray:
        """Normalised action (n_joints,) in [-1, 1] for the env's current state; ``observation`` is unused."""
        goal = self.env.task.goal
        if self._goal is None or not np.array_equal(goal, self._goal):
            self.solve(goal)
        q, _ = self.robot.joint_state()
        return self.action(self._targets - q, self.positions())


def inverse_kinematics_time_us(env: UrdfReachEnv, goals: list[np.ndarray]) -> float:
    """Mean wall time of one ``calculateInverseKinematics`` solve (microseconds) for each goal (3k,), m.

    Same client and robot as the controllers; one end effector: ``calculateInverseKinematics``, several:
    ``calculateInverseKinematics2``. The robot stays in its current state (IK does not move it).
    """
    client, body, links = env.robot.client, env.robot.body, env.task.end_effector_links
    elapsed = 0.0
    for goal in goals:
        targets = np.asarray(goal, dtype=np.float64).reshape(-1, 3).tolist()
        start = time.perf_counter()
        if len(links) == 1:
            client.calculateInverseKinematics(body, links[0], targets[0])
        else:
            client.calculateInverseKinematics2(body, links, targets)
        elapsed += time.perf_counter() - start
    return 1e6 * elapsed / max(len(goals), 1)
