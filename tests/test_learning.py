"""Learning, not just running: the default planar-arm config, trained briefly with real SB3 DDPG + HER on
real PyBullet, ends far closer to fixed held-out goals than the same policy did untrained."""

from __future__ import annotations

import torch

from rlik.evaluation.episodes import evaluate, policy_controller, summarise
from rlik.training.config import compose_train_config
from rlik.training.factory import make_env, make_model, make_training_env

STEPS = 5000  # a tenth of the default run: about 20 s of learn() on two cores
GOALS = 50  # the periodic evaluation's count; seeds from the final goal set
# Untrained, the fingertip ends about half a metre from its goal; at STEPS the default config ends within
# about 2 cm on every seed tried (0 to 4). The factor leaves room for a slower seed or machine.
IMPROVEMENT = 8.0


def learn_and_evaluate(overrides: list[str], steps: int) -> tuple[dict, dict]:
    """The composed config's model on GOALS held-out goals before and after ``steps`` env steps of ``learn()``."""
    torch.set_num_threads(2)
    cfg = compose_train_config([*overrides, "seed=0"])
    train_env = make_training_env(cfg.env, cfg.n_envs, cfg.seed)
    eval_env = make_env(cfg.env)
    try:
        model = make_model(cfg, train_env)
        before = summarise(evaluate(eval_env, policy_controller(model), GOALS, cfg.eval.goal_seed))
        model.learn(steps)
        after = summarise(evaluate(eval_env, policy_controller(model), GOALS, cfg.eval.goal_seed))
    finally:
        train_env.close()
        eval_env.close()
    return before, after


def test_default_planar_config_learns_to_reach() -> None:
    before, after = learn_and_evaluate([], STEPS)
    assert before["final_distance_median"] > 0.2  # untrained: a real distance to close
    assert after["final_distance_median"] < before["final_distance_median"] / IMPROVEMENT
    assert after["success_rate"] >= before["success_rate"] + 0.1  # within 1 cm of a tenth more goals at least


ARM_STEPS = 10_000  # a twelfth of env=arm's default run on the KUKA
# Untrained, the KUKA's hand ends about half a metre from its goal; a tenth of the run closes most of it. The
# factor leaves room for a slower seed.
ARM_IMPROVEMENT = 2.5


def test_zoo_arm_learns_from_its_urdf_alone() -> None:
    """``env=kuka``: the arm env with nothing but the KUKA's URDF and end effector, its default algorithm."""
    before, after = learn_and_evaluate(["env=kuka"], ARM_STEPS)
    assert before["final_distance_median"] > 0.3
    assert after["final_distance_median"] < before["final_distance_median"] / ARM_IMPROVEMENT
