"""Train a learned-IK policy: ``python train.py [overrides]``, the same as ``rlik-train`` and ``python -m rlik.train``.

    python train.py                                   # planar arm, DDPG, default budget
    python train.py env=humanoid total_timesteps=300000
    python train.py -m seed=0,1,2 algo.learning_rate=1e-3,3e-4 hydra/launcher=joblib
    python train.py resume=outputs/<date>/<run>

The run, step by step, is ``rlik.training.run.train``; the command line around it is ``rlik/train.py``.
"""

from rlik.train import cli

if __name__ == "__main__":
    cli()
