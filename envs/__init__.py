"""rlik environments. Importing this package registers the gymnasium ids:

- ``UrdfReach-v0``: any URDF (``urdf=``, ``end_effector=`` required), joint-torque reaching.
- ``PlanarArmReach-v0``: the planar 2-link arm of ``urdf/planar_arm_2link.urdf``, 1 cm success.
"""

from gymnasium.envs.registration import register

from envs.reach_env import UrdfReachEnv
from envs.robot import Robot
from envs.session import PyBulletSession
from envs.task import ReachTask

__all__ = ["PyBulletSession", "ReachTask", "Robot", "UrdfReachEnv"]

register(id="UrdfReach-v0", entry_point="envs.reach_env:UrdfReachEnv", max_episode_steps=100)

PLANAR_ARM = {
    "urdf": "planar_arm_2link.urdf",
    "end_effector": "fingertip",
    "success_threshold": 0.01,
    "initial_joint_noise": 0.3,
    "camera_distance": 1.8,
}
register(id="PlanarArmReach-v0", entry_point="envs.reach_env:UrdfReachEnv", max_episode_steps=50, kwargs=PLANAR_ARM)
