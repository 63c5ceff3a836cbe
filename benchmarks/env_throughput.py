"""Env steps/s with random actions against a bare PyBullet loop doing the same physics work.

For each env: ``gym.make`` it and step it with random actions (resetting on episode end); then,
in a raw ``BulletClient(DIRECT)`` holding the same URDF (same base, same ground, same start pose),
run the same number of ``stepSimulation`` calls (steps x frame_skip, same joint speed limits) with a
``setJointMotorControlArray(TORQUE_CONTROL)`` every substep (random torques of the env's scale,
``action_torques``) and ``getJointStates`` plus one ``getLinkState`` per end effector every env step. The two are interleaved ``--repeats`` times and
the best of each is kept, since a shared machine is noisy. Target: env >= 0.5 x bare.

    python benchmarks/env_throughput.py
    python benchmarks/env_throughput.py --steps 5000 --env PlanarArmReach-v0
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import gymnasium as gym
import numpy as np
import pybullet
import pybullet_data
import rlik.envs  # noqa: F401  (registers the ids)
from pybullet_utils.bullet_client import BulletClient
from rlik.envs.reach_env import UrdfReachEnv
from rlik.envs.session import clamp_joint_speeds
from rlik.envs.urdf_files import resolve_urdf

TARGET_RATIO = 0.5

# (name, gym id, kwargs). Entries whose id is not registered are skipped.
ENTRIES: list[tuple[str, str, dict[str, Any]]] = [
    ("planar_arm", "PlanarArmReach-v0", {}),
    ("kuka_iiwa", "UrdfReach-v0", {"urdf": "kuka_iiwa/model.urdf", "end_effector": "lbr_iiwa_link_7"}),
    ("humanoid", "HumanoidReach-v0", {}),
]


def env_rate(env: gym.Env, steps: int, seed: int) -> float:
    """Env steps/s with random actions, resets on episode end included.

    Actions come from the same ``rng.uniform`` as the bare loop's, not ``action_space.sample()``
    (gymnasium's sampler alone costs about 25 us), so the ratio measures the env itself.
    """
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    shape = env.action_space.shape
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1.0, 1.0, shape).astype(np.float32))
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


class BareLoop:
    """A raw PyBullet copy of an env's world: same URDF, base, ground, gravity, timestep and start pose."""

    def __init__(self, env: UrdfReachEnv) -> None:
        source, robot = env.session.client, env.robot
        params = source.getPhysicsEngineParameters()
        self.client = BulletClient(connection_mode=pybullet.DIRECT)
        self.client.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.client.setTimeStep(params["fixedTimeStep"])
        self.client.setGravity(0.0, 0.0, params["gravityAccelerationZ"])
        if getattr(env, "ground", None) is not None:  # the humanoid stands on pybullet_data's plane
            self.client.loadURDF("plane.urdf")
        position, orientation = source.getBasePositionAndOrientation(robot.body)
        self.body = self.client.loadURDF(
            str(resolve_urdf(robot.urdf)),
            basePosition=position,
            baseOrientation=orientation,
            useFixedBase=robot.fixed_base,
            flags=pybullet.URDF_USE_INERTIA_FROM_FILE,
        )
        for index, state in zip(robot.all_actuated, source.getJointStates(robot.body, robot.all_actuated)):
            self.client.resetJointState(self.body, index, state[0], 0.0)
        clamp_joint_speeds(self.client, self.body, robot.joint_indices)  # the env's motor speed limits
        self.client.setJointMotorControlArray(
            self.body, robot.all_actuated, pybullet.VELOCITY_CONTROL, forces=[0.0] * len(robot.all_actuated)
        )
        self.joints = robot.joint_indices
        self.links = env.task.end_effector_links
        self.action_torques = env.action_torques  # the env's torque per unit of action (action_scale)
        self.frame_skip = env.frame_skip

    def rate(self, steps: int, seed: int) -> float:
        """Bare steps/s: ``frame_skip`` torque-controlled physics steps, then the state reads."""
        rng = np.random.default_rng(seed)
        body, joints = self.body, self.joints
        # Bound once, as a tuned hand-written loop would (BulletClient wraps on every lookup).
        set_motors, step = self.client.setJointMotorControlArray, self.client.stepSimulation
        get_joint_states, get_link_state = self.client.getJointStates, self.client.getLinkState
        start = time.perf_counter()
        for _ in range(steps):
            torques = (rng.uniform(-1.0, 1.0, len(joints)) * self.action_torques).tolist()
            for _ in range(self.frame_skip):
                set_motors(body, joints, pybullet.TORQUE_CONTROL, forces=torques)
                step()
            get_joint_states(body, joints)
            for link in self.links:
                get_link_state(body, link, computeForwardKinematics=True)
        return steps / (time.perf_counter() - start)

    def close(self) -> None:
        self.client.disconnect()


def measure(env_id: str, kwargs: dict[str, Any], steps: int, repeats: int) -> tuple[float, float, int]:
    """Best env and bare steps/s over interleaved repetitions, and the env's frame_skip."""
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    bare = BareLoop(env.unwrapped)
    best_env = best_bare = 0.0
    try:
        for rep in range(repeats):
            best_env = max(best_env, env_rate(env, steps, seed=rep))
            best_bare = max(best_bare, bare.rate(steps, seed=rep))
    finally:
        bare.close()
        env.close()
    return best_env, best_bare, env.unwrapped.frame_skip


def main() -> None:
    registered = [entry for entry in ENTRIES if entry[1] in gym.registry]
    choices = sorted({name for name, _, _ in registered} | {env_id for _, env_id, _ in registered})
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="env steps per repetition (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the best is kept")
    parser.add_argument(
        "--env", action="append", choices=choices, help="entry name or gym id; repeatable (default: all registered)"
    )
    args = parser.parse_args()
    selected = [e for e in registered if not args.env or e[0] in args.env or e[1] in args.env]

    print(f"{args.steps} env steps x {args.repeats} interleaved repetitions (best kept), random actions\n")
    header = f"{'env':<12} {'gym id':<20} {'frame_skip':>10} {'env steps/s':>12} {'bare steps/s':>13} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for name, env_id, kwargs in selected:
        env_sps, bare_sps, frame_skip = measure(env_id, kwargs, args.steps, args.repeats)
        ratio = env_sps / bare_sps
        verdict = "" if ratio >= TARGET_RATIO else f"  below target {TARGET_RATIO}"
        print(f"{name:<12} {env_id:<20} {frame_skip:>10} {env_sps:>12.0f} {bare_sps:>13.0f} {ratio:>6.2f}{verdict}")
    print(f"\nratio = env / bare; target >= {TARGET_RATIO}")


if __name__ == "__main__":
    main()
