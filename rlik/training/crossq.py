"""CrossQ (sb3-contrib) on Dict observations, so that it trains with HER like DDPG, TD3, SAC and TQC.

sb3-contrib ships CrossQ with ``MlpPolicy`` only. Its networks take any features extractor, so a
multi-input policy is the same BatchRenorm actor and critics behind SB3's ``CombinedExtractor`` (or the
``GoalErrorExtractor``). The one place CrossQ assumes tensors is its joint critic pass over observations
and next observations, ``torch.cat([obs, next_obs])``: for Dict samples, ``ConcatenableObservations``
concatenates key by key.
"""

from __future__ import annotations

from typing import Any

import torch
from sb3_contrib import CrossQ
from sb3_contrib.crossq.policies import CrossQPolicy
from stable_baselines3.common.torch_layers import CombinedExtractor


class ConcatenableObservations(dict):
    """A Dict observation batch (key -> tensor) that ``torch.cat`` joins key by key along ``dim``."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func is not torch.cat:
            return NotImplemented
        parts, *rest = args
        return cls({key: torch.cat([part[key] for part in parts], *rest, **(kwargs or {})) for key in parts[0]})


class MultiInputCrossQPolicy(CrossQPolicy):
    """CrossQ's policy for Dict observations: ``CombinedExtractor`` in front of the BatchRenorm networks."""

    def __init__(self, *args: Any, features_extractor_class: type = CombinedExtractor, **kwargs: Any) -> None:
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


class MultiInputCrossQ(CrossQ):
    """sb3-contrib's CrossQ, which also trains on Dict observations (HER) with ``MultiInputPolicy``."""

    policy_aliases = {**CrossQ.policy_aliases, "MultiInputPolicy": MultiInputCrossQPolicy}

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        sample = self.replay_buffer.sample  # type: ignore[union-attr]

        def concatenable_sample(*args: Any, **kwargs: Any) -> Any:
            data = sample(*args, **kwargs)
            if not isinstance(data.observations, dict):
                return data
            return data._replace(
                observations=ConcatenableObservations(data.observations),
                next_observations=ConcatenableObservations(data.next_observations),
            )

        self.replay_buffer.sample = concatenable_sample  # type: ignore[union-attr,method-assign]
        try:
            super().train(gradient_steps, batch_size)
        finally:
            del self.replay_buffer.sample  # type: ignore[union-attr]
