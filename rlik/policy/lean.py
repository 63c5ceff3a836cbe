"""A trained deterministic actor as plain numpy: one file, numpy only, the same actions as SB3's ``predict``.

SB3's ``model.predict(obs, deterministic=True)`` converts the observation to tensors, checks its shape,
switches the networks to evaluation mode and back, and runs torch's modules one by one: a few hundred
microseconds for an MLP whose arithmetic takes a few. ``LeanPolicy`` is that arithmetic alone: the run's
observation normalisation, the features (SB3's key-by-key concatenation of a Dict observation, plus the
goal-error features of ``GoalErrorExtractor``), the actor's affine layers with their activations
(CrossQ's BatchRenorm folded into the next layer), and the rescaling to the action space.

This module imports numpy and nothing else, so ``policy.npz`` (``LeanPolicy.save``) runs wherever numpy
does; ``rlik/policy/export.py`` builds a ``LeanPolicy`` from an SB3 model and writes ``policy.onnx`` from it.

    policy = LeanPolicy.load("outputs/<run>/policy.npz")
    action = policy.act(observation)          # one observation (dict or array) -> (n_actions,)
    actions = policy.act(batch)               # a batch, leading dimension n -> (n, n_actions)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0, out=x),
    "tanh": lambda x: np.tanh(x, out=x),
    "identity": lambda x: x,
}


@dataclass
class Normalization:
    """SB3 ``VecNormalize`` observation statistics of one observation key (or of a Box observation).

    ``clip((obs - mean) / sqrt(var + epsilon), -clip, clip)``, computed in float64 as VecNormalize does.
    """

    mean: np.ndarray
    var: np.ndarray
    epsilon: float
    clip: float


@dataclass
class Layer:
    """``activation(x @ weight + bias)``; weight (n_in, n_out), bias (n_out,), float32."""

    weight: np.ndarray
    bias: np.ndarray
    activation: str

    def __post_init__(self) -> None:
        # C order: a row vector times a transposed (Fortran-order) matrix takes twice as long.
        self.weight = np.ascontiguousarray(self.weight, dtype=np.float32)
        self.bias = np.ascontiguousarray(self.bias, dtype=np.float32)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{self.activation}'; expected one of {sorted(ACTIVATIONS)}.")


@dataclass
class LeanPolicy:
    """A deterministic actor: observation -> action, numpy only.

    :param keys: the Dict observation's keys in SB3's feature order; empty for a Box observation.
    :param input_sizes: the flat size of each key's value (of the Box observation: one size).
    :param layers: the actor's layers, first to last; the last one's activation is ``tanh`` for SB3's
        squashed actors (DDPG, TD3, SAC, TQC, CrossQ).
    :param action_low: the action space's lower bounds (n_actions,).
    :param action_high: its upper bounds (n_actions,).
    :param normalization: observation key (``""`` for a Box observation) -> its statistics; keys left out
        are not normalised.
    :param goal_error_scales: ``GoalErrorExtractor``'s length scales; the features then end with
        ``tanh((desired_goal - achieved_goal) / scale)`` for each scale. Empty: no such features.
    :param metadata: free-form JSON-able facts saved with the policy (algorithm, env id, source model).
    """

    keys: list[str]
    input_sizes: list[int]
    layers: list[Layer]
    action_low: np.ndarray
    action_high: np.ndarray
    normalization: dict[str, Normalization] = field(default_factory=dict)
    goal_error_scales: list[float] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.action_low = np.asarray(self.action_low, dtype=np.float32)
        self.action_high = np.asarray(self.action_high, dtype=np.float32)
        self._prepare()

    def _prepare(self) -> None:
        """The per-call work laid out once, so that one observation costs a few numpy calls: the
        normalisation as four arrays over the concatenated inputs (identity where a key is not normalised),
        the action rescaling skipped when the action space is [-1, 1]."""
        names = self.keys or [""]
        sizes = dict(zip(names, self.input_sizes))
        if self.goal_error_scales and {"achieved_goal", "desired_goal"} & set(self.normalization):
            # The config refuses this pairing too (goal-error scales are lengths in metres).
            raise ValueError(
                "goal-error features on normalised goals do not convert; train with normalize_goals=false."
            )
        means, stds, clips = [], [], []
        for name in names:
            norm = self.normalization.get(name)
            means.append(norm.mean.reshape(-1) if norm else np.zeros(sizes[name]))
            stds.append(np.sqrt(norm.var.reshape(-1) + norm.epsilon) if norm else np.ones(sizes[name]))
            clips.append(np.full(sizes[name], norm.clip if norm else np.inf))
        n_goal_features = len(self.goal_error_scales) * sizes.get("desired_goal", 0)  # appended, not normalised
        means.append(np.zeros(n_goal_features))
        stds.append(np.ones(n_goal_features))
        clips.append(np.full(n_goal_features, np.inf))
        self._normalised = bool(self.normalization)
        self._mean, self._std = np.concatenate(means), np.concatenate(stds)
        self._clip = np.concatenate(clips)
        # GoalErrorExtractor's layout: [error / scale_0, error / scale_1, ...] for error = desired - achieved.
        self._inverse_scales = (1.0 / np.asarray(self.goal_error_scales, dtype=np.float32)).reshape(-1, 1)
        self._unit_actions = bool(np.all(self.action_low == -1.0) and np.all(self.action_high == 1.0))
        self._activations = [ACTIVATIONS[layer.activation] for layer in self.layers]

    @property
    def n_actions(self) -> int:
        return len(self.action_low)

    def act(self, observation: dict[str, Any] | np.ndarray) -> np.ndarray:
        """Actions for one observation, (n_actions,), or for a batch (leading dimension n), (n, n_actions).

        :param observation: a dict of arrays (goal-conditioned envs) or an array, as the env returns it,
            unnormalised; a batch has one more leading dimension than the policy's inputs.
        """
        if self.keys:
            if not isinstance(observation, dict):
                raise TypeError(f"this policy takes a dict observation with keys {self.keys}, got {type(observation)}.")
            single = np.ndim(observation[self.keys[0]]) <= 1
            parts = [observation[key] for key in self.keys]
            if not single:
                parts = [np.reshape(part, (len(part), -1)) for part in parts]
        else:
            single = np.ndim(observation) <= 1
            parts = [np.reshape(observation, -1 if single else (len(observation), -1))]
        if self.goal_error_scales:  # from the goals as given: they are never normalised here (_prepare)
            error = np.subtract(observation["desired_goal"], observation["achieved_goal"], dtype=np.float32)
            scaled = error[..., None, :] * self._inverse_scales  # (..., n_scales, goal_size)
            parts.append(np.tanh(scaled.reshape(*error.shape[:-1], -1)))
        x = np.concatenate(parts, axis=-1)
        if self._normalised:  # in float64, as VecNormalize
            x = np.clip((x - self._mean) / self._std, -self._clip, self._clip)
        x = x.astype(np.float32, copy=False)
        if single:
            x = x[None]  # a row times a matrix: faster than numpy's vector-matrix product
        for layer, activation in zip(self.layers, self._activations):
            x = x @ layer.weight
            x += layer.bias
            x = activation(x)
        if not self._unit_actions:
            x = self.action_low + 0.5 * (x + 1.0) * (self.action_high - self.action_low)
        return x[0] if single else x

    __call__ = act

    # -- policy.npz -------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz): the arrays, and the rest as JSON under ``meta``; ``load`` reads it back."""
        arrays: dict[str, np.ndarray] = {"action_low": self.action_low, "action_high": self.action_high}
        for i, layer in enumerate(self.layers):
            arrays[f"layer{i}/weight"], arrays[f"layer{i}/bias"] = layer.weight, layer.bias
        for key, norm in self.normalization.items():
            arrays[f"normalization/{key}/mean"], arrays[f"normalization/{key}/var"] = norm.mean, norm.var
        meta = {
            "format_version": FORMAT_VERSION,
            "keys": self.keys,
            "input_sizes": self.input_sizes,
            "activations": [layer.activation for layer in self.layers],
            "normalization": {key: {"epsilon": n.epsilon, "clip": n.clip} for key, n in self.normalization.items()},
            "goal_error_scales": self.goal_error_scales,
            "metadata": self.metadata,
        }
        arrays["meta"] = np.array(json.dumps(meta))
        path = Path(path)
        with open(path, "wb") as handle:  # np.savez would append .npz to a name without it
            np.savez(handle, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LeanPolicy:
        """A policy written by ``save``."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"{path} is policy format {meta.get('format_version')}, this loader reads {FORMAT_VERSION}; "
                    "export the run again with this version."
                )
            layers = [
                Layer(data[f"layer{i}/weight"], data[f"layer{i}/bias"], activation)
                for i, activation in enumerate(meta["activations"])
            ]
            normalization = {
                key: Normalization(data[f"normalization/{key}/mean"], data[f"normalization/{key}/var"], **params)
                for key, params in meta["normalization"].items()
            }
            return cls(
                keys=meta["keys"],
                input_sizes=meta["input_sizes"],
                layers=layers,
                action_low=data["action_low"],
                action_high=data["action_high"],
                normalization=normalization,
                goal_error_scales=meta["goal_error_scales"],
                metadata=meta["metadata"],
            )


def stack_observations(observations: list[dict[str, Any] | np.ndarray]) -> dict[str, np.ndarray] | np.ndarray:
    """Single observations (dicts of arrays, or arrays) as one batch, for ``LeanPolicy.act``."""
    if isinstance(observations[0], dict):
        return {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    return np.stack(observations)
