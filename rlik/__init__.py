"""rlik: learned inverse kinematics. Importing it registers the gymnasium ids (``rlik.envs``):

    import gymnasium as gym
    import rlik  # noqa: F401

    env = gym.make("PlanarArmReach-v0")

Packages: ``rlik.envs`` (robots, tasks, the PyBullet session), ``rlik.control`` (classical controllers),
``rlik.training``, ``rlik.evaluation``, ``rlik.policy`` (loading and exporting policies), ``rlik.ops``
(command line, signals, launchers, tracking); docs/architecture.md draws how they connect.
"""

import rlik.envs  # noqa: F401  (registers the env ids)

__version__ = "0.1.0"
