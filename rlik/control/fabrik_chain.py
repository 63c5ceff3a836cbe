"""FABRIK (Aristidou & Lasenby 2011) on one limb: its pivots and bones, and their conversion to joint angles."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from rlik.control.geometry import nearest_turn, rotation, signed_angle, unit, xyz_euler_angles
from rlik.envs.robot import Robot
from rlik.envs.session import JointInfo


def _place(anchor: list[float], toward: list[float], length: float) -> list[float]:
    """The point ``length`` (m) from ``anchor`` (3,) on the way to ``toward`` (3,) (FABRIK's step along a bone)."""
    distance = math.dist(anchor, toward)
    scale = length / distance if distance > 0.0 else 0.0
    return [a + scale * (t - a) for a, t in zip(anchor, toward)]


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
        self.session, self.body = robot.session, robot.body
        infos = self.session.joint_infos(self.body)
        self.joints = self._limb(infos, set(robot.joint_indices), end_effector)
        names = [infos[index].name for index in self.joints]
        link_name = infos[end_effector].link_name

        def unsupported(why: str) -> ValueError:
            return ValueError(
                f"FABRIK cannot drive '{link_name}' through joints {names}: {why}. Its conversion of positions to "
                "joint angles handles a planar chain (revolute joints with parallel axes) or a ball shoulder "
                "(three revolute joints, one origin, orthogonal axes) followed by one hinge elbow; use "
                "controller=jacobian for this robot."
            )

        if not self.joints:
            raise unsupported("the end effector has no actuated joint of its own below where another limb branches off")
        if not all(infos[index].revolute for index in self.joints):
            raise unsupported("it has a prismatic joint")
        position = {index: i for i, index in enumerate(robot.joint_indices)}
        self.columns = [position[index] for index in self.joints]  # the limb's joints among the env's
        # A joint without limits (continuous) gets infinite ones, so that clipping leaves it alone.
        limited = robot.limited_revolute[self.columns]
        self.lower = np.where(limited, robot.joint_limits[0, self.columns], -np.inf)
        self.upper = np.where(limited, robot.joint_limits[1, self.columns], np.inf)

        # Each joint's frame at angle 0 relative to the previous joint's frame (rotation, translation), read at
        # the current pose; the end effector's origin in the last joint's frame.
        self.axes = [unit(np.array(infos[index].axis, dtype=np.float64)) for index in self.joints]
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
    def _limb(infos: list[JointInfo], actuated: set[int], end_effector: int) -> list[int]:
        """Actuated joint indices (root to tip) from ``end_effector`` up to where another actuated limb branches off."""
        parents = {info.index: info.parent_index for info in infos}
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
        position, orientation = self.session.link_frame_pose(self.body, link)
        return self.session.rotation_matrix(orientation), np.array(position)

    def _in_plane(self, point: np.ndarray) -> np.ndarray:
        """A root-frame point (3,) projected on the planar limb's plane through the first joint."""
        return point - (point @ self.normal) * self.normal

    def angles(self) -> np.ndarray:
        """The limb's joint angles (m,), rad, now."""
        return np.array(self.session.joint_positions(self.body, self.joints))

    def root_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """World rotation (3, 3) and origin (3,), m, of the root frame now (it moves with the limb's parent link)."""
        rotation_world, origin = self._link_frame(self.joints[0])
        angle = self.session.joint_positions(self.body, self.joints[:1])[0]
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
