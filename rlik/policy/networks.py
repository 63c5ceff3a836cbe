"""Policy parts beside SB3's: a DDPG/TD3 actor kept out of tanh saturation, and goal-error features.

Saturation: a deterministic actor ends in ``tanh``. The critic is only ever trained on actions in [-1, 1], so
its gradient at the boundary points outward as often as not; once the actor's pre-tanh outputs grow
past about 3, ``tanh``'s gradient vanishes and the policy is stuck at bang-bang torques for good.
On the humanoid, most of a DDPG policy's actions ended beyond +-0.95 with pre-tanh values far past 3,
and it never held a pose. Penalising the pre-tanh outputs in the actor loss keeps them
where the critic's gradient still reaches (OpenAI baselines' HER DDPG has a similar ``action_l2``).
A ``saturation_cost`` of 0.1 keeps most actions off the bounds, but the runs that used it ended farther
from their goals (RESULTS.md), so the config's default is 0.

Goal-error features (``GoalErrorExtractor``, any algorithm with Dict observations): see the class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor
from stable_baselines3.td3.policies import Actor, MultiInputPolicy, TD3Policy


def pre_tanh_actions(actor: Actor, obs: torch.Tensor) -> torch.Tensor:
    """A TD3/DDPG actor's outputs before ``tanh`` (batch, n_actions); SB3's ``actor.mu`` ends in ``nn.Tanh``."""
    return actor.mu[:-1](actor.extract_features(obs, actor.features_extractor))


class _PreTanhPenalty(torch.autograd.Function):
    """Identity forward; backward adds the gradient of ``cost * mean(x ** 2)``.

    The penalty then joins exactly the loss that backpropagates through the actor's output (the actor
    loss; the critic's targets use the target actor without gradients), with no change to SB3's update.
    """

    @staticmethod
    def forward(ctx: Any, pre_tanh: torch.Tensor, cost: float) -> torch.Tensor:
        ctx.save_for_backward(pre_tanh)
        ctx.cost = cost
        return pre_tanh.view_as(pre_tanh)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (pre_tanh,) = ctx.saved_tensors
        return grad + 2.0 * ctx.cost * pre_tanh / pre_tanh.numel(), None


class SaturationPenalisedActor(Actor):
    """SB3's TD3/DDPG actor with ``saturation_cost * mean(pre_tanh ** 2)`` added to its loss.

    :param saturation_cost: weight of the mean squared pre-tanh action (dimensionless, per unit of Q).
    """

    def __init__(self, *args: Any, saturation_cost: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saturation_cost = saturation_cost

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions (batch, n_actions) in [-1, 1]."""
        pre_tanh = pre_tanh_actions(self, obs)
        if torch.is_grad_enabled():
            pre_tanh = _PreTanhPenalty.apply(pre_tanh, self.saturation_cost)
        return torch.tanh(pre_tanh)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "saturation_cost": self.saturation_cost}


class _SaturationPenaltyMixin:
    """Builds a ``SaturationPenalisedActor``; the policy takes ``saturation_cost`` and saves it with the model."""

    def __init__(self, *args: Any, saturation_cost: float, **kwargs: Any) -> None:
        self.saturation_cost = saturation_cost  # read by make_actor, which the base __init__ calls
        super().__init__(*args, **kwargs)

    def make_actor(self, features_extractor: Any = None) -> Actor:
        kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return SaturationPenalisedActor(**kwargs, saturation_cost=self.saturation_cost).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "saturation_cost": self.saturation_cost}


class SaturationPenalisedMlpPolicy(_SaturationPenaltyMixin, TD3Policy):
    """``MlpPolicy`` (Box observations) with a ``SaturationPenalisedActor``."""


class SaturationPenalisedMultiInputPolicy(_SaturationPenaltyMixin, MultiInputPolicy):
    """``MultiInputPolicy`` (Dict observations, HER) with a ``SaturationPenalisedActor``."""


class GoalErrorExtractor(BaseFeaturesExtractor):
    """SB3's ``CombinedExtractor`` for HER's Dict observations, plus the goal error at several length scales.

    A reaching policy must act on ``desired_goal - achieved_goal`` to the success threshold's precision
    (1 cm on the planar arm), but it sees both points in metres, where 1 cm is about 1 % of the input's range:
    an MLP needs large, slowly learned weights to tell 1 cm from 3 cm, and the learned arm stops a few cm
    short. ``tanh(error / scale)`` for each of ``scales`` hands the network that difference already resolved
    at each scale, bounded to [-1, 1]. It is computed from the (possibly relabelled) goals of each sample,
    so it stays consistent under HER.

    :param observation_space: Dict with ``observation``, ``achieved_goal`` and ``desired_goal``.
    :param scales: length scales in the goals' units (metres when goals are not normalised), e.g. ``(0.1, 0.01)``.
    """

    def __init__(self, observation_space: spaces.Dict, scales: Sequence[float]) -> None:
        combined = CombinedExtractor(observation_space)
        goal_dim = get_flattened_obs_dim(observation_space["desired_goal"])
        super().__init__(observation_space, features_dim=combined.features_dim + goal_dim * len(scales))
        self.combined = combined
        self.scales = list(scales)
        self.register_buffer("inverse_scales", torch.tensor([1.0 / s for s in self.scales]).repeat_interleave(goal_dim))
        self.n_scales = len(self.scales)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        error = observations["desired_goal"] - observations["achieved_goal"]  # (batch, goal_dim)
        scaled = torch.tanh(error.repeat(1, self.n_scales) * self.inverse_scales)
        return torch.cat([self.combined(observations), scaled], dim=1)
