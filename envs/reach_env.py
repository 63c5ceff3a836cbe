"""``UrdfReach-v0``: any URDF robot, joint-torque actions, reach goal points with chosen links."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from rlik.envs.robot import Robot
from rlik.envs.session import PyBulletSession
from rlik.envs.task import ReachTask, end_effector_names


class UrdfReachEnv(gym.Env):
    """Torque-controlled reaching with any URDF robot: ``UrdfReach-v0`` and ``PlanarArmReach-v0``.

    ## Description

    A robot described by a URDF must bring one or more end-effector links to goal points and hold them there,
    driven by joint torques. ``PlanarArmReach-v0`` is the 2-link arm of ``urdf/planar_arm_2link.urdf`` (fingertip,
    1 cm success), moving in a horizontal plane, where gravity makes no joint torque; ``UrdfReach-v0`` takes any
    URDF (``urdf=`` and ``end_effector=`` required), e.g. pybullet_data's ``kuka_iiwa/model.urdf``. The env composes
    a ``PyBulletSession`` (the physics client), a ``Robot`` (joints, limits, torques) and a ``ReachTask`` (goals,
    reward, success).

    ## Action Space

    ``Box(-1, 1, (n,), float32)``: one value per actuated joint, in the order of ``joints`` (``robot.joint_names``;
    n = 2 for the planar arm, 7 for the KUKA). Action ``a_i`` commands the torque ``action_torques[i] * a_i`` (N m,
    N for a prismatic joint; ``action_torques`` is ``action_scale`` times the joint's URDF effort limit), plus the
    gravity-cancelling torques with ``gravity_compensation``, at every one of the ``frame_skip`` physics steps.
    Values outside [-1, 1] are clipped; NaN or inf, or another number of values, raise ``ValueError``.

    ## Observation Space

    With ``goal_conditioned=False``, ``Box(-inf, inf, (d,), float32)``. For r revolute and p prismatic actuated
    joints (n = r + p), l of the revolute ones limited, and k end effectors:

    | Num | Observation | Min | Max | Unit |
    |---|---|---|---|---|
    | 0 : r | cos of each revolute joint angle | -1 | 1 | - |
    | r : 2r | sin of each revolute joint angle | -1 | 1 | - |
    | 2r : 2r+p | prismatic joint positions | -inf | inf | m |
    | 2r+p : 2r+p+n | joint velocities, in ``joints`` order | -inf | inf | rad/s (m/s) |
    | next l (``observe_joint_positions``) | limited revolute angles scaled to [-1, 1] between their limits | -1 | 1 | - |
    | next 3k | end-effector positions (x, y, z each), world frame | -inf | inf | m |
    | next 3k | goals | -inf | inf | m |
    | next 3k | goals minus end-effector positions | -inf | inf | m |

    ``PlanarArmReach-v0``: d = 15 (cos q1, cos q2, sin q1, sin q2, two velocities, fingertip, goal, difference),
    17 with ``observe_joint_positions``. With ``goal_conditioned=True``, a ``Dict`` as SB3's HER expects:
    ``observation`` (the joint rows, then the end-effector positions), ``achieved_goal`` (3k, m: the end-effector
    positions) and ``desired_goal`` (3k, m: the goals).

    ## Rewards

    Per step, from the distances ``d_i`` (m) of the end effectors to their goals, by ``reward_type``: ``"dense"``
    ``-mean(d_i)``; ``"sparse"`` -1 until every ``d_i < success_threshold``, then 0; ``"mixed"`` their sum. Minus
    ``info["penalty"]``, the goal-independent cost: ``torque_cost`` times the mean squared action. With
    ``goal_conditioned=True``, ``compute_reward(achieved_goal, desired_goal, info)`` gives the same reward for any
    goals (HER's relabelling keeps the penalty).

    ## Starting State

    ``initial_joint_positions`` (zeros clipped to the limits) plus uniform noise of +-``initial_joint_noise``, at
    rest. The goal is the end-effector positions of a joint configuration ``goal_range`` of the way from that pose
    to a uniform draw within the joint limits (so always reachable), or ``reset(options={"goal": [x, y, z, ...]})``.

    ## Episode End

    - Termination: never; reaching alone has no failure state.
    - Truncation: the time limit of the registration (``UrdfReach-v0`` 100 steps, ``PlanarArmReach-v0`` 50), or an
      unstable simulation (a joint faster than ``max_joint_speed`` or a NaN/inf state): ``info["unstable"]`` is
      True and the observation and reward are finite.

    ``info``: ``distance`` (m, the largest end-effector error), ``is_success`` (every end effector within
    ``success_threshold``), ``unstable``, ``penalty`` (the goal-independent cost).

    ## Arguments

    ``gym.make("PlanarArmReach-v0", goal_conditioned=True, reward_type="mixed")``, or
    ``gym.make("UrdfReach-v0", urdf="kuka_iiwa/model.urdf", end_effector="lbr_iiwa_link_7")``:

    :param urdf: URDF path; relative paths are looked up in ``urdf/`` and ``pybullet_data``.
    :param end_effector: link name, or a list of link names for one goal per link.
    :param joints: joint names to actuate; ``None`` means every revolute/prismatic joint.
    :param success_threshold: metres.
    :param frame_skip: physics steps per env step; ``dt = frame_skip * timestep`` seconds.
    :param timestep: physics step, seconds.
    :param goal_conditioned: Dict observation and ``compute_reward`` for HER.
    :param reward_type: ``"dense"``, ``"sparse"`` or ``"mixed"`` (see ``ReachTask``).
    :param torque_cost: weight on the mean squared action in the reward.
    :param action_scale: fraction of each joint's URDF effort limit that a full action (+-1) commands: one
        for all joints, or one per joint (a URDF that gives every joint the same effort, as pybullet_data's
        KUKA does, would otherwise spin the light wrist as hard as the shoulder).
    :param initial_joint_positions: start pose (rad or m); ``None`` means zeros clipped to the limits.
    :param initial_joint_noise: uniform noise added to the start pose at reset, rad or m.
    :param goal_range: goals come from joint configurations this fraction of the way from the start
        pose to a uniform random one (1: the whole workspace); ``set_goal_range`` changes it (curriculum).
    :param fixed_base: bolt the robot's base to the world.
    :param base_position: metres.
    :param gravity_compensation: add gravity-cancelling torques (inverse dynamics) under the action.
    :param velocity_damping: viscous joint damping added to the URDF's, N m s/rad (or N s/m), one for all joints
        or one per joint, as a torque-controlled arm's low-level damping loop provides (PyBullet's joint
        damping). A lightly damped arm (the KUKA's URDF damping is 0.5) otherwise swings on at full speed
        after every push. Keep the gain of a joint that moves little inertia small: a stiff one on a light
        wrist makes the simulation unstable. 0 adds nothing.
    :param max_joint_speed: joint speed beyond which the simulation counts as unstable, rad/s or m/s.
    :param observe_joint_positions: also observe each limited revolute joint's angle scaled to [-1, 1] between
        its limits. cos and sin alone make a joint's two stops neighbours when its range spans about 2 pi (the
        planar arm's shoulder), though the way to a goal behind the arm differs entirely at each.
    :param render_mode: ``"rgb_array"`` (headless TinyRenderer) or ``"human"`` (PyBullet GUI).
    :param camera_distance: render camera distance from the base, metres.

    ## Version History

    - v0: the first version: joint-torque actions, dense, sparse and mixed rewards, HER-ready Dict observations.
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 24}

    def __init__(
        self,
        urdf: str,
        end_effector: str | Sequence[str],
        joints: Sequence[str] | None = None,
        success_threshold: float = 0.05,
        frame_skip: int = 10,
        timestep: float = 1.0 / 240.0,
        goal_conditioned: bool = False,
        reward_type: str = "dense",
        torque_cost: float = 0.0,
        action_scale: float | Sequence[float] = 1.0,
        initial_joint_positions: Sequence[float] | None = None,
        initial_joint_noise: float = 0.0,
        goal_range: float = 1.0,
        fixed_base: bool = True,
        base_position: Sequence[float] = (0.0, 0.0, 0.0),
        gravity_compensation: bool = False,
        velocity_damping: float | Sequence[float] = 0.0,
        max_joint_speed: float = 50.0,
        observe_joint_positions: bool = False,
        render_mode: str | None = None,
        camera_distance: float = 1.6,
    ) -> None:
        self._open(render_mode, frame_skip, timestep)
        with self._closed_on_error():
            if render_mode is not None:  # shown on a floor that nothing touches: an arm moves as it does unrendered
                self.session.load_ground(collide=False)
            robot = Robot(self.session, urdf, joints=joints, fixed_base=fixed_base, base_position=base_position)
            task = ReachTask(robot, end_effector_names(end_effector), success_threshold, reward_type, torque_cost)
            self.compose(
                robot,
                task,
                action_scale=action_scale,
                velocity_damping=velocity_damping,
                initial_joint_positions=initial_joint_positions,
                initial_joint_noise=initial_joint_noise,
                goal_range=goal_range,
                goal_conditioned=goal_conditioned,
                gravity_compensation=gravity_compensation,
                max_joint_speed=max_joint_speed,
                observe_joint_positions=observe_joint_positions,
                camera_distance=camera_distance,
            )

    # --- composition: every env's constructor opens its session, builds its robot and task in it, composes them ---

    def _open(self, render_mode: str | None, frame_skip: int, timestep: float) -> None:
        """Check the render mode and the step, and open the env's physics session."""
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"unknown render_mode '{render_mode}'; choose from {self.metadata['render_modes']} or None."
            )
        if frame_skip < 1:
            raise ValueError(f"frame_skip must be >= 1, got {frame_skip}.")
        self.render_mode = render_mode
        self.frame_skip = frame_skip
        self.dt = frame_skip * timestep  # seconds of simulated time per env step
        # A video plays in real time; an env step longer than 2 s still gets one frame per second (0 breaks writers).
        self.metadata = {**self.metadata, "render_fps": max(int(round(1.0 / self.dt)), 1)}
        self.session = PyBulletSession(timestep=timestep, gui=render_mode == "human")
        self._gui_camera_aimed = False

    @contextlib.contextmanager
    def _closed_on_error(self) -> Iterator[None]:
        """A constructor that fails leaves no physics server behind."""
        try:
            yield
        except Exception:
            self.session.close()
            raise

    def compose(
        self,
        robot: Robot,
        task: ReachTask,
        *,
        action_scale: float | Sequence[float],
        velocity_damping: float | Sequence[float],
        initial_joint_positions: Sequence[float] | None,
        initial_joint_noise: float,
        goal_range: float,
        goal_conditioned: bool,
        gravity_compensation: bool,
        max_joint_speed: float,
        observe_joint_positions: bool,
        camera_distance: float,
    ) -> None:
        """The env around ``robot`` and ``task``, built in ``self.session``: actions, start pose and state, spaces.
        The keywords are the class's parameters of the same names."""
        self.robot, self.task = robot, task
        self.goal_conditioned = goal_conditioned
        self.gravity_compensation = gravity_compensation
        self.max_joint_speed = max_joint_speed
        self.observe_joint_positions = observe_joint_positions
        self.camera_distance = camera_distance
        scales = np.asarray(action_scale, dtype=np.float64)
        if not (np.all(scales > 0.0) and np.all(scales <= 1.0)):
            raise ValueError(
                f"action_scale must be in (0, 1] (a fraction of the URDF effort limits), got {action_scale}."
            )
        damping = np.asarray(velocity_damping, dtype=np.float64)
        if not np.all(damping >= 0):
            raise ValueError(f"velocity_damping must be >= 0 (N m s/rad), got {velocity_damping}.")
        # (n_joints,), N m per unit of action
        self.action_torques = self.robot.per_joint("action_scale", scales) * self.robot.torque_limits
        damping = self.robot.per_joint("velocity_damping", damping)
        if np.any(damping > 0):
            self.robot.add_joint_damping(damping)
        self.initial_joint_positions = self.robot.start_pose(initial_joint_positions)
        self.initial_joint_noise = initial_joint_noise
        self.set_goal_range(goal_range)

        if self.goal_conditioned:
            # Only goal envs may have compute_reward: SB3 and gymnasium-robotics detect goal envs by it.
            # It is the task's vectorised reward, which HER calls to relabel (equals the step reward).
            self.compute_reward = self.task.compute_reward

        self.goal_markers = [self.session.add_marker(np.zeros(3)) for _ in self.task.end_effector_links]
        self._initial_state = self.session.save_state()
        self.task.prepare_start(self.initial_joint_positions, self._initial_state)

        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.robot.n_joints,), dtype=np.float32)
        self.task.set_goal(self.task.achieved_goal())
        self.observation_space = self.task.observation_space(self._robot_observation().size, self.goal_conditioned)

    def _robot_observation(self) -> np.ndarray:
        """The robot's part of the observation (``Robot.observation``); its joint velocities kept for the speed check."""
        observation, self._joint_velocities = self.robot.observation(self.observe_joint_positions)
        return observation

    def set_goal_range(self, goal_range: float) -> None:
        """Goals from the next reset on lie ``goal_range`` (0, 1] of the way to a random pose (see the class)."""
        if not 0.0 < goal_range <= 1.0:
            raise ValueError(f"goal_range must be in (0, 1], got {goal_range}.")
        self.goal_range = float(goal_range)

    # --- gymnasium API ---------------------------------------------------------------------------

    def _observation(self, achieved: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        """Observation for the current state; ``achieved`` is ``task.achieved_goal()`` in float32, read once per step."""
        robot_obs = self._robot_observation()
        if self.goal_conditioned:
            return {
                "observation": np.concatenate([robot_obs, achieved]).astype(np.float32),
                "achieved_goal": achieved,
                "desired_goal": self.task.desired_goal.copy(),
            }
        goal = self.task.desired_goal
        return np.concatenate([robot_obs, achieved, goal, goal - achieved]).astype(np.float32)

    def _info(self, distances: np.ndarray, torque_penalty: float) -> dict[str, Any]:
        """``info`` for per-end-effector ``distances`` (k,), m."""
        info = {
            "distance": float(distances.max()),
            "is_success": bool((distances < self.task.success_threshold).all()),
            "unstable": False,
        }
        self.task.update_info(info)
        info["penalty"] = torque_penalty + self.task.state_penalty(info)
        return info

    def _check_open(self) -> None:
        """A clear error instead of PyBullet's "Not connected to physics server" once the env is closed."""
        if self.session.closed:
            raise ValueError(
                f"this {type(self).__name__} is closed (close() was called); make a new env with gym.make to go on."
            )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray | dict[str, np.ndarray], dict[str, Any]]:
        """Reset to the start pose with a new goal.

        ``options={"goal": [x, y, z, ...]}`` sets the goal (world frame, metres, 3 per end effector)
        instead of sampling one; an unreachable goal is allowed.
        """
        self._check_open()
        super().reset(seed=seed)
        self.session.restore_state(self._initial_state)
        # Sampled even when options give the goal, so that a seed's start pose does not depend on them.
        sampled = self.task.sample_goal(self.np_random, self.initial_joint_positions, self.goal_range)
        if options and options.get("goal") is not None:
            goal = np.asarray(options["goal"], dtype=np.float64).ravel()
            if goal.shape != (self.task.goal_dim,) or not np.all(np.isfinite(goal)):
                raise ValueError(
                    f"options['goal'] must be {self.task.goal_dim} finite numbers (x, y, z per end effector "
                    f"{self.task.end_effector_names}), got {options['goal']!r}."
                )
            sampled = goal
        self.task.set_goal(sampled)
        self.session.restore_state(self._initial_state)
        noise = self.np_random.uniform(-self.initial_joint_noise, self.initial_joint_noise, self.robot.n_joints)
        self.robot.reset(np.clip(self.initial_joint_positions + noise, *self.robot.joint_limits))
        for marker, position in zip(self.goal_markers, self.task.goal.reshape(-1, 3)):
            self.session.move_marker(marker, position)
        if self.render_mode == "human" and not self._gui_camera_aimed:  # once: the user may move it after
            self.session.aim_gui_camera(**self.camera())
            self._gui_camera_aimed = True
        achieved = self.task.achieved_goal().astype(np.float32)
        observation = self._observation(achieved)  # before _info: the humanoid task's info reuses its balance reading
        return observation, self._info(self.task.distances(achieved, self.task.desired_goal), torque_penalty=0.0)

    def torques(self, action: np.ndarray) -> np.ndarray:
        """Joint torques (n_joints,), N m, for a normalised action (clipped to [-1, 1])."""
        return np.array(self._torques(np.minimum(np.maximum(action, -1.0), 1.0)))  # np.clip costs 3x more

    def _torques(self, action: np.ndarray) -> list[float]:
        """``torques`` of an action already in [-1, 1], as a list (PyBullet reads it faster than an array)."""
        torques = action * self.action_torques
        if self.gravity_compensation:
            torques = torques + self.robot.gravity_torques()
        return torques.tolist()

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self._check_open()
        action = np.asarray(action, dtype=np.float64)
        if action.size != self.action_torques.size:
            raise ValueError(
                f"action has shape {action.shape}, but the action space's shape is {self.action_space.shape} (one "
                f"value per joint of {self.robot.joint_names}); pass an action of that shape."
            )
        action = action.reshape(self.action_torques.shape)
        if not np.isfinite(action).all():
            raise ValueError(f"action contains NaN or inf: {action}; check the policy's outputs.")
        action = np.minimum(np.maximum(action, -1.0), 1.0)
        torque_penalty = self.task.torque_penalty(action)
        torques = self._torques(action)
        apply_torques, physics_step = self.robot.apply_torques, self.session.step
        for substep in range(self.frame_skip):
            if substep and self.gravity_compensation:  # gravity torques follow the pose at every physics step
                torques = self._torques(action)
            apply_torques(torques)
            physics_step()

        achieved = self.task.achieved_goal().astype(np.float32)
        observation = self._observation(achieved)
        distances = self.task.distances(achieved, self.task.desired_goal)
        info = self._info(distances, torque_penalty)
        unstable = not np.abs(self._joint_velocities).max() <= self.max_joint_speed  # also True for NaN
        # NaN and inf propagate through a sum: one finiteness test per array instead of per element.
        arrays = observation.values() if self.goal_conditioned else (observation,)
        unstable |= not math.isfinite(sum(float(a.sum()) for a in arrays))
        if unstable:
            # A blown-up simulation must not reach the replay buffer as NaN: truncate the episode
            # with a finite observation, and a reward that HER's recomputation still matches.
            info["unstable"] = True
            observation = self._sanitise(observation)
            achieved = np.nan_to_num(achieved, nan=0.0, posinf=0.0, neginf=0.0)
            distances = self.task.distances(achieved, self.task.desired_goal)
            info["penalty"] = float(np.nan_to_num(info["penalty"], nan=0.0, posinf=0.0, neginf=0.0))

        reward = float(self.task.reward(distances, info["penalty"]))
        terminated = not unstable and self.task.is_terminated(info)
        return observation, reward, terminated, unstable, info

    @staticmethod
    def _sanitise(observation: Any) -> Any:
        if isinstance(observation, dict):
            return {k: np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0) for k, v in observation.items()}
        return np.nan_to_num(observation, nan=0.0, posinf=0.0, neginf=0.0)

    def camera(self) -> dict[str, Any]:
        """Where the camera looks from (``PyBulletSession.render``'s keywords), as the robot says."""
        return self.robot.camera(self.camera_distance)

    def render(self) -> np.ndarray | None:
        """RGB frame (``rgb_array``); with ``human`` the GUI window shows the simulation itself: None."""
        self._check_open()
        if self.render_mode == "rgb_array":
            return self.session.render(**self.camera())
        return None

    def close(self) -> None:
        self.session.close()
