"""From a trained SB3 model to ``LeanPolicy`` (rlik/policy/lean.py), ``policy.npz`` and ``policy.onnx``.

``lean_policy`` reads the deterministic actor's weights out of the model: DDPG and TD3 (``actor.mu``, ending
in tanh), SAC and TQC (``actor.latent_pi`` then ``actor.mu``, squashed by tanh), CrossQ (the same, with
BatchRenorm layers, which in evaluation mode are per-feature affine maps and are folded into the linear
layer after them). ``onnx_model`` writes the same computation as an ONNX graph (opset 17), normalisation
included, so it needs nothing of this project to run: the ``onnx`` extra (``pip install -e ".[onnx]"``)
builds and checks it, any ONNX runtime runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.torch_layers import BatchRenorm
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor
from stable_baselines3.common.vec_env import VecNormalize

from rlik.policy.lean import Layer, LeanPolicy, Normalization
from rlik.policy.networks import GoalErrorExtractor

ACTIVATION_NAMES = {torch.nn.ReLU: "relu", torch.nn.Tanh: "tanh"}
ONNX_OPSET = 17


def lean_policy(model: BaseAlgorithm, vec_normalize: VecNormalize | None = None, **metadata: Any) -> LeanPolicy:
    """The deterministic actor of ``model`` with the observation statistics of ``vec_normalize``.

    :param model: a DDPG, TD3, SAC, TQC or CrossQ model with an MLP actor (ReLU or tanh hidden layers).
    :param vec_normalize: the run's observation normalisation, if it trained with one.
    :param metadata: saved with the policy (e.g. ``source="best_model.zip"``).
    :raises ValueError: for an actor this conversion does not know, naming the part.
    """
    policy = model.policy
    actor = getattr(policy, "actor", None)
    if actor is None or not policy.squash_output:
        raise ValueError(f"{type(model).__name__}: only the squashed actors of DDPG, TD3, SAC, TQC and CrossQ export.")
    if getattr(actor, "use_sde", False):
        raise ValueError("a gSDE actor does not export; train with algo.use_sde=false.")
    # SAC, TQC, CrossQ: the mean action, squashed; DDPG and TD3: actor.mu ends in tanh itself.
    squashed_mean = hasattr(actor, "latent_pi")
    modules = [*actor.latent_pi, actor.mu, torch.nn.Tanh()] if squashed_mean else list(actor.mu)
    keys, scales = _feature_layout(actor.features_extractor)
    space = model.observation_space
    return LeanPolicy(
        keys=keys,
        input_sizes=[int(np.prod(space[key].shape)) for key in keys] if keys else [int(np.prod(space.shape))],
        layers=_layers(modules),
        action_low=model.action_space.low,
        action_high=model.action_space.high,
        normalization=_normalization(vec_normalize, space) if vec_normalize is not None else {},
        goal_error_scales=scales,
        metadata={"algorithm": type(model).__name__, **metadata},
    )


def _feature_layout(extractor: torch.nn.Module) -> tuple[list[str], list[float]]:
    """(Dict keys in feature order, goal-error scales) of a features extractor this conversion knows."""
    scales: list[float] = []
    if isinstance(extractor, GoalErrorExtractor):
        extractor, scales = extractor.combined, list(extractor.scales)
    if isinstance(extractor, FlattenExtractor):
        return [], scales
    if isinstance(extractor, CombinedExtractor):
        for key, part in extractor.extractors.items():
            if not isinstance(part, torch.nn.Flatten):
                raise ValueError(f"observation key '{key}' goes through {type(part).__name__}; only vectors export.")
        return list(extractor.extractors), scales
    raise ValueError(f"features extractor {type(extractor).__name__} does not export; use SB3's default extractors.")


def _layers(modules: list[torch.nn.Module]) -> list[Layer]:
    """Affine layers with activations; a BatchRenorm (evaluation mode) folds into the linear layer after it."""
    layers: list[Layer] = []
    pending: tuple[np.ndarray, np.ndarray] | None = None  # x -> x * a + c, waiting for the next linear layer
    for module in modules:
        if isinstance(module, BatchRenorm):
            std = torch.sqrt(module.ra_var + module.eps)
            a = (module.scale / std if module.affine else 1.0 / std).detach().double().numpy()
            c = ((module.bias if module.affine else 0.0) - module.ra_mean * torch.as_tensor(a)).detach().double()
            pending = (a, c.numpy())
        elif isinstance(module, torch.nn.Linear):
            weight = module.weight.detach().double().numpy().T  # (n_in, n_out)
            bias = module.bias.detach().double().numpy()
            if pending is not None:
                a, c = pending
                weight, bias, pending = a[:, None] * weight, bias + c @ weight, None
            layers.append(Layer(weight.astype(np.float32), bias.astype(np.float32), "identity"))
        elif type(module) in ACTIVATION_NAMES and layers and layers[-1].activation == "identity":
            layers[-1].activation = ACTIVATION_NAMES[type(module)]
        else:
            raise ValueError(f"actor layer {module} does not export; use ReLU or tanh activations.")
    if pending is not None or not layers or layers[-1].activation != "tanh":
        raise ValueError("the actor does not end in a linear layer squashed by tanh; it does not export.")
    return layers


def _normalization(vec_normalize: VecNormalize, space: spaces.Space) -> dict[str, Normalization]:
    def of(stats: Any) -> Normalization:
        return Normalization(
            np.array(stats.mean, dtype=np.float64),  # copies: training goes on updating the statistics
            np.array(stats.var, dtype=np.float64),
            float(vec_normalize.epsilon),
            float(vec_normalize.clip_obs),
        )

    if not vec_normalize.norm_obs:
        return {}
    if isinstance(space, spaces.Dict):
        return {key: of(vec_normalize.obs_rms[key]) for key in vec_normalize.norm_obs_keys}
    return {"": of(vec_normalize.obs_rms)}


def onnx_model(policy: LeanPolicy) -> Any:
    """``policy`` as an ``onnx.ModelProto``: inputs named by observation key (``observation`` for a Box),
    each (batch, dim) float32, unnormalised; output ``action`` (batch, n_actions)."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError('policy.onnx needs the onnx package: pip install -e ".[onnx]"') from None
    nodes, initializers, inputs = [], [], []

    def constant(name: str, value: np.ndarray | float) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(op: str, *args: str, name: str, **attributes: Any) -> str:
        nodes.append(helper.make_node(op, list(args), [name], **attributes))
        return name

    parts: dict[str, str] = {}
    for key, size in zip(policy.keys or ["observation"], policy.input_sizes):
        inputs.append(helper.make_tensor_value_info(key, TensorProto.FLOAT, ["batch", size]))
        value = key
        norm = policy.normalization.get(key if policy.keys else "")
        if norm is not None:  # the statistics in float32: within 1e-6 of VecNormalize's float64 arithmetic
            centred = node("Sub", value, constant(f"{key}/mean", norm.mean), name=f"{key}/centred")
            scaled = node(
                "Div", centred, constant(f"{key}/std", np.sqrt(norm.var + norm.epsilon)), name=f"{key}/scaled"
            )
            value = node(
                "Clip",
                scaled,
                constant(f"{key}/low", -norm.clip),
                constant(f"{key}/high", norm.clip),
                name=f"{key}/norm",
            )
        parts[key] = value
    features = list(parts.values())
    if policy.goal_error_scales:
        error = node("Sub", parts["desired_goal"], parts["achieved_goal"], name="goal_error")
        scaled = [
            node("Mul", error, constant(f"inverse_scale{i}", 1.0 / s), name=f"goal_error{i}")
            for i, s in enumerate(policy.goal_error_scales)
        ]
        features.append(node("Tanh", node("Concat", *scaled, name="goal_errors", axis=1), name="goal_error_features"))
    x = node("Concat", *features, name="features", axis=1)
    for i, layer in enumerate(policy.layers):
        x = node("MatMul", x, constant(f"layer{i}/weight", layer.weight), name=f"layer{i}/matmul")
        x = node("Add", x, constant(f"layer{i}/bias", layer.bias), name=f"layer{i}/affine")
        if layer.activation != "identity":
            x = node({"relu": "Relu", "tanh": "Tanh"}[layer.activation], x, name=f"layer{i}/{layer.activation}")
    half_range = 0.5 * (policy.action_high - policy.action_low)
    x = node("Add", x, constant("one", 1.0), name="shifted")
    x = node("Mul", x, constant("half_range", half_range), name="stretched")
    node("Add", x, constant("action_low", policy.action_low), name="action")
    output = helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", policy.n_actions])
    graph = helper.make_graph(nodes, "rlik_policy", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="rlik")
    model.ir_version = 8  # readable by onnxruntime releases from 1.14 on
    onnx.checker.check_model(model)
    return model


def save_onnx(policy: LeanPolicy, path: Path) -> Path:
    """Write ``policy`` as ONNX to ``path``; needs the onnx package."""
    model = onnx_model(policy)
    import onnx  # onnx_model has checked it is there

    onnx.save(model, str(path))
    return path


class OnnxPolicy:
    """``policy.onnx`` run by ONNX Runtime, acting like ``LeanPolicy.act``: one observation or a batch.

    :param path: a file written by ``save_onnx``.
    """

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ImportError('running policy.onnx needs onnxruntime: pip install -e ".[onnx]"') from None
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.sizes = {node.name: node.shape[1] for node in self.session.get_inputs()}

    def act(self, observation: dict[str, Any] | np.ndarray) -> np.ndarray:
        """Actions (n_actions,) for one observation, (n, n_actions) for a batch."""
        values = observation if isinstance(observation, dict) else {"observation": observation}
        single = np.ndim(next(iter(values.values()))) <= 1
        feeds = {
            name: np.asarray(values[name], dtype=np.float32).reshape(1 if single else -1, size)
            for name, size in self.sizes.items()
        }
        actions = self.session.run(["action"], feeds)[0]
        return actions[0] if single else actions
