"""rlik environments. Importing this package registers the gymnasium ids:

- ``ArmReach-v0``: any fixed-base arm (``urdf=``, ``end_effector=`` required), every other setting derived from it.
- ``UrdfReach-v0``: any URDF (``urdf=``, ``end_effector=`` required), joint-torque reaching.
- ``PlanarArmReach-v0``: the planar 2-link arm of ``urdf/planar_arm_2link.urdf``, 1 cm success.
- ``HumanoidReach-v0``: a free-standing humanoid, by default ``urdf/humanoid_upper_body.urdf``'s, right hand, 2 cm;
  any humanoid URDF with ``urdf=``, ``foot_links=``, ``end_effector=``, ``joints=`` (``env=g1``: the Unitree G1).
- ``HumanoidBimanualReach-v0``: the same humanoid, one goal per hand.

Each env composes a ``PyBulletSession`` (the one class that calls PyBullet), a robot (``Robot``, or
``HumanoidRobot`` with its balance) and a task (``ReachTask``, or ``BalanceTask``).
"""

from gymnasium.envs.registration import register
from rlik.envs.arm_env import ArmReachEnv
from rlik.envs.humanoid import HumanoidRobot
from rlik.envs.humanoid_env import HumanoidReachEnv
from rlik.envs.reach_env import UrdfReachEnv
from rlik.envs.robot import Robot
from rlik.envs.session import PyBulletSession
from rlik.envs.task import BalanceTask, ReachTask

__all__ = [
    "ArmReachEnv",
    "BalanceTask",
    "HumanoidReachEnv",
    "HumanoidRobot",
    "PyBulletSession",
    "ReachTask",
    "Robot",
    "UrdfReachEnv",
]

# Any fixed-base arm, its settings derived from the URDF; its episode length too, so no TimeLimit here.
register(id="ArmReach-v0", entry_point="rlik.envs.arm_env:ArmReachEnv")
register(id="UrdfReach-v0", entry_point="rlik.envs.reach_env:UrdfReachEnv", max_episode_steps=100)

PLANAR_ARM = {
    "urdf": "planar_arm_2link.urdf",
    "end_effector": "fingertip",
    "success_threshold": 0.01,
    "initial_joint_noise": 0.3,
    "camera_distance": 1.8,
}
register(
    id="PlanarArmReach-v0", entry_point="rlik.envs.reach_env:UrdfReachEnv", max_episode_steps=50, kwargs=PLANAR_ARM
)

# Humanoid upper body on rigid legs, free to fall (envs/humanoid_env.py holds the defaults).
register(id="HumanoidReach-v0", entry_point="rlik.envs.humanoid_env:HumanoidReachEnv", max_episode_steps=100)
register(
    id="HumanoidBimanualReach-v0",
    entry_point="rlik.envs.humanoid_env:HumanoidReachEnv",
    max_episode_steps=100,
    kwargs={"end_effector": ["left_hand", "right_hand"]},
)
