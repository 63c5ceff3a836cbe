"""rlik environments. Importing this package registers the gymnasium ids:

- ``ArmReach-v0``: any fixed-base arm (``urdf=``, ``end_effector=`` required), every other setting derived from it;
  ``KukaReach-v0``: pybullet_data's KUKA iiwa.
- ``UrdfReach-v0``: any URDF (``urdf=``, ``end_effector=`` required), joint-torque reaching.
- ``PlanarArmReach-v0``: the planar 2-link arm of ``urdf/planar_arm_2link.urdf``, 1 cm success.
- ``HumanoidReach-v0``: a free-standing humanoid, ``urdf/humanoid_upper_body.urdf``'s, right hand, 2 cm; any
  humanoid URDF with ``urdf=``, ``foot_links=``, ``end_effector=``, ``joints=``. ``G1Reach-v0``: the Unitree G1.
- ``HumanoidBimanualReach-v0``, ``G1BimanualReach-v0``: the same humanoids, one goal per hand.

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

# The robots we ship, one form each: a registered id whose kwargs are the robot's settings (the env constructors hold
# only what any robot shares). conf/env/<name>.yaml names the id (rlik.training.config.ENV_PRESETS) and adds the
# training choices; gym.make(<id>) gives the same env outside rlik's configs.
PLANAR_ARM = {
    "urdf": "planar_arm_2link.urdf",
    "end_effector": "fingertip",
    "success_threshold": 0.01,
    "initial_joint_noise": 0.3,
    "camera_distance": 1.8,
}
KUKA = {"urdf": "kuka_iiwa/model.urdf", "end_effector": "lbr_iiwa_link_7"}  # settings derived (ArmReach-v0)
# Our humanoid upper body on rigid legs, free to fall, with the torques and damping it was tuned with by hand (its
# URDF's damping; those derived from its mass matrix are close to them).
HUMANOID = {
    "urdf": "humanoid_upper_body.urdf",
    "end_effector": "right_hand",
    "foot_links": ["left_foot", "right_foot"],
    "action_scale": 0.15,
    "velocity_damping": "urdf",
}
# The Unitree G1 (example-robot-data: pip install "rlik[robots]"): waist (3) and right arm (7); the legs and the
# left arm held at zero, the standing pose; the pelvis stands at 0.716 m, fall_height 0.75 of it as HUMANOID's.
G1_WAIST = ["waist_yaw_joint", "waist_roll_joint", "waist_pitch_joint"]
G1_ARM = ["shoulder_pitch_joint", "shoulder_roll_joint", "shoulder_yaw_joint", "elbow_joint"]
G1_ARM += ["wrist_roll_joint", "wrist_pitch_joint", "wrist_yaw_joint"]
G1 = {
    "urdf": "package://example-robot-data/robots/g1_description/urdf/g1_29dof_rev_1_0.urdf",
    "end_effector": "right_rubber_hand",
    "joints": G1_WAIST + [f"right_{joint}" for joint in G1_ARM],
    "foot_links": ["left_ankle_roll_link", "right_ankle_roll_link"],
    "fall_height": 0.53,
    "camera_distance": 2.0,
}

# Any fixed-base arm, its settings derived from the URDF; its episode length too, so no TimeLimit here.
register(id="ArmReach-v0", entry_point="rlik.envs.arm_env:ArmReachEnv")
register(id="KukaReach-v0", entry_point="rlik.envs.arm_env:ArmReachEnv", kwargs=KUKA)
register(id="UrdfReach-v0", entry_point="rlik.envs.reach_env:UrdfReachEnv", max_episode_steps=100)
register(
    id="PlanarArmReach-v0", entry_point="rlik.envs.reach_env:UrdfReachEnv", max_episode_steps=50, kwargs=PLANAR_ARM
)
HUMANOID_ENV = "rlik.envs.humanoid_env:HumanoidReachEnv"
register(id="HumanoidReach-v0", entry_point=HUMANOID_ENV, max_episode_steps=100, kwargs=HUMANOID)
register(
    id="HumanoidBimanualReach-v0",
    entry_point=HUMANOID_ENV,
    max_episode_steps=100,
    kwargs={**HUMANOID, "end_effector": ["left_hand", "right_hand"]},
)
register(id="G1Reach-v0", entry_point=HUMANOID_ENV, max_episode_steps=100, kwargs=G1)
register(
    id="G1BimanualReach-v0",
    entry_point=HUMANOID_ENV,
    max_episode_steps=100,
    kwargs={
        **G1,
        "end_effector": ["left_rubber_hand", "right_rubber_hand"],
        "joints": G1_WAIST + [f"{side}_{joint}" for side in ("left", "right") for joint in G1_ARM],
    },
)
