"""DDPG's policy options: the saturation-penalised actor (rlik/policy/networks.py), twin critics, the
learning-rate decay, the fused optimizer and the actor average."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import DDPG

from rlik.policy.networks import SaturationPenalisedActor, pre_tanh_actions
from rlik.training.averaging import ActorAverage
from rlik.training.config import compose_train_config
from rlik.training.factory import make_model, make_training_env


def planar_model(saturation_cost: float, n_critics: int = 1, fused_optimizer: bool = False) -> DDPG:
    cfg = compose_train_config(
        [
            "algo.net_arch=[32,32]",
            f"algo.saturation_cost={saturation_cost}",
            f"algo.n_critics={n_critics}",
            f"algo.fused_optimizer={fused_optimizer}",
        ]
    )
    return make_model(cfg, make_training_env(cfg.env, n_envs=1, seed=0))


def observations(model: DDPG, n: int = 64) -> dict[str, torch.Tensor]:
    space = model.observation_space
    rng = np.random.default_rng(0)
    batch = {key: rng.normal(size=(n, *sub.shape)).astype(np.float32) for key, sub in space.spaces.items()}
    return model.policy.obs_to_tensor(batch)[0]


def test_penalty_adds_the_gradient_of_the_mean_squared_pre_tanh_action() -> None:
    model = planar_model(saturation_cost=0.7)
    actor = model.actor
    assert isinstance(actor, SaturationPenalisedActor)
    obs = observations(model)
    q_weights = torch.tensor([1.5, -0.5])  # a stand-in critic: Q = w . a

    def gradients(loss: torch.Tensor) -> list[torch.Tensor]:
        actor.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in actor.parameters()]

    penalised = gradients(-(actor(obs) @ q_weights).mean())
    pre_tanh = pre_tanh_actions(actor, obs)
    explicit = gradients(-(torch.tanh(pre_tanh) @ q_weights).mean() + 0.7 * pre_tanh.pow(2).mean())
    for a, b in zip(penalised, explicit):
        torch.testing.assert_close(a, b)


def test_penalty_keeps_the_actor_out_of_saturation_and_survives_save_load(tmp_path: Path) -> None:
    """A critic that always asks for more (Q = sum of actions) drives a plain actor to bang-bang
    outputs; with the penalty the pre-tanh actions settle where tanh' = 2 cost x / n (x about 0.6)."""
    medians = {}
    for cost in (0.0, 1.0):
        model = planar_model(cost)
        actor, obs = model.actor, observations(model)
        for _ in range(300):
            loss = -actor(obs).sum(dim=1).mean()
            actor.optimizer.zero_grad()
            loss.backward()
            actor.optimizer.step()
        with torch.no_grad():
            pre_tanh = pre_tanh_actions(actor, obs)
        medians[cost] = float(pre_tanh.abs().median())
        if cost:
            model.save(tmp_path / "model.zip")
            loaded = DDPG.load(tmp_path / "model.zip", env=model.get_env(), device="cpu")
            assert loaded.actor.saturation_cost == 1.0
            with torch.no_grad():
                torch.testing.assert_close(loaded.actor(obs), actor(obs))
    assert medians[0.0] > 3.0, medians  # tanh' < 0.01: stuck at +-1
    assert 0.3 < medians[1.0] < 1.0, medians


def test_twin_critics_train_and_survive_save_load(tmp_path: Path) -> None:
    """``algo.n_critics=2``: DDPG learns two Q-networks (its TD target is their minimum) and keeps both."""
    model = planar_model(saturation_cost=0.0, n_critics=2)
    model.learning_starts = 50
    model.learn(150)
    obs, actions = observations(model), torch.zeros(64, model.action_space.shape[0])
    with torch.no_grad():
        q1, q2 = model.critic(obs, actions)
    assert not torch.allclose(q1, q2)  # two networks, trained on the same targets from different inits
    model.save(tmp_path / "model.zip")
    loaded = DDPG.load(tmp_path / "model.zip", env=model.get_env(), device="cpu")
    with torch.no_grad():
        for a, b in zip(loaded.critic(obs, actions), (q1, q2)):
            torch.testing.assert_close(a, b)


def test_learning_rate_decays_linearly_after_its_start_and_survives_save_load(tmp_path: Path) -> None:
    cfg = compose_train_config(["algo.learning_rate_final=0.0001", "algo.learning_rate_decay_start=0.5"])
    model = make_model(cfg, make_training_env(cfg.env, n_envs=1, seed=0))
    # SB3 passes the fraction of the run still to go: constant over the first half, then linear.
    progress_remaining = [1.0, 0.75, 0.5, 0.25, 0.0]
    expected = [1e-3, 1e-3, 1e-3, 5.5e-4, 1e-4]
    assert np.allclose([model.lr_schedule(p) for p in progress_remaining], expected)
    model.save(tmp_path / "model.zip")
    loaded = DDPG.load(tmp_path / "model.zip", env=model.get_env())
    assert np.allclose([loaded.lr_schedule(p) for p in progress_remaining], expected)


def test_fused_optimizer_takes_the_same_adam_steps_and_survives_save_load(tmp_path: Path) -> None:
    plain, fused = (planar_model(saturation_cost=0.0, fused_optimizer=f) for f in (False, True))
    assert fused.actor.optimizer.defaults["fused"] and fused.critic.optimizer.defaults["fused"]
    assert not plain.actor.optimizer.defaults["fused"]  # torch's default (foreach) kernel, as before the option
    obs = observations(plain)
    initial = [w.detach().clone() for w in plain.actor.parameters()]
    for model in (plain, fused):  # the same seed: the same initial weights, so the same loss and gradients
        for _ in range(3):
            model.actor.optimizer.zero_grad()
            model.actor(obs).square().sum().backward()
            model.actor.optimizer.step()
    for a, b in zip(plain.actor.parameters(), fused.actor.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert not all(torch.equal(a, w) for a, w in zip(plain.actor.parameters(), initial, strict=True))
    fused.save(tmp_path / "model.zip")
    loaded = DDPG.load(tmp_path / "model.zip", env=fused.get_env())
    assert loaded.actor.optimizer.defaults["fused"]


def test_actor_average_is_the_mean_of_the_weights_and_reloads_for_its_own_start(tmp_path: Path) -> None:
    actor = planar_model(saturation_cost=0.0).actor
    average, snapshots = ActorAverage(start_step=10), []
    for step in (10, 11, 12):
        with torch.no_grad():
            for weight in actor.parameters():
                weight.add_(torch.randn_like(weight))  # stands in for an update
        snapshots.append({k: v.clone() for k, v in actor.state_dict().items()})
        average.update(actor, step)
    expected = {k: sum(s[k] for s in snapshots) / 3 for k in snapshots[0]}
    torch.testing.assert_close(average.mean, expected)
    average.apply(actor)
    torch.testing.assert_close(actor.state_dict(), expected)
    average.save(tmp_path / "average.pt")
    reloaded = ActorAverage.load(tmp_path / "average.pt", start_step=10)
    assert (reloaded.first_step, reloaded.count) == (10, 3)
    torch.testing.assert_close(reloaded.mean, expected)
    # A resume with another start (a longer run) begins a new mean.
    assert ActorAverage.load(tmp_path / "average.pt", start_step=20).count == 0
