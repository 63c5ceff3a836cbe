"""The algorithms rlik trains, in one place: each one's SB3 class and config schema, and the roles of its keys.

Adding an algorithm: its schema dataclass here (the keys of ``conf/algo/<name>.yaml``, with their defaults), one
``ALGORITHMS`` entry, and ``conf/algo/<name>.yaml``. The schema registration (``rlik.training.config``), the model
factory (``rlik.training.factory``), resume (``rlik.training.resume``) and loading (``rlik.policy.loading``) read
this registry; export (``rlik.policy.export``) takes any squashed MLP actor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from sb3_contrib import TQC
from stable_baselines3 import DDPG, SAC, TD3
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from rlik.training.crossq import MultiInputCrossQ


@dataclass
class ActionNoiseConfig:
    """Exploration noise added to deterministic actions (DDPG, TD3); ``type: none`` for SAC."""

    type: str = "normal"  # normal | ornstein_uhlenbeck | none
    sigma: float = 0.1  # standard deviation, in normalised action units


@dataclass
class HerConfig:
    """Hindsight experience replay, used when the env is goal-conditioned and ``enabled``."""

    enabled: bool = True
    goal_selection_strategy: str = "future"  # future | final | episode
    n_sampled_goal: int = 4


@dataclass
class OffPolicyConfig:
    """SB3 off-policy knobs shared by DDPG, TD3, SAC, TQC and CrossQ."""

    name: str = "ddpg"  # ddpg | td3 | sac | tqc | crossq
    net_arch: list[int] = field(default_factory=lambda: [256, 256])
    n_critics: int = 2  # Q-networks; the TD target is their minimum (clipped double-Q)
    learning_rate: float = 1e-3  # Adam's step size, at the start of the run
    # None: a constant learning_rate. Else it falls linearly to this value, from the fraction
    # learning_rate_decay_start of total_timesteps to the run's end (RESULTS.md: on the humanoid
    # DDPG, a decay over the last 10 % steadies the final model; an earlier one slows learning).
    learning_rate_final: Optional[float] = None  # noqa: UP045
    learning_rate_decay_start: float = 0.0
    # Adam's fused kernel (torch.optim.Adam(fused=True)): the same update in fewer passes over the weights,
    # a few per cent more env steps/s (RESULTS.md, "Benchmarks"). Off by default so that earlier runs repeat
    # bit for bit: the fused kernel rounds differently.
    fused_optimizer: bool = False
    # None: the final model is the last actor. Else the uniform mean of the actor's weights over the updates from
    # this fraction of total_timesteps to the end (rlik/training/averaging.py); training goes on with the last actor.
    actor_average_start: Optional[float] = None  # noqa: UP045
    # Length scales (metres) at which the networks also see the goal error tanh(error / scale)
    # (rlik/policy/networks.py GoalErrorExtractor); empty: SB3's plain concatenation of the Dict observation.
    goal_error_scales: list[float] = field(default_factory=list)
    gamma: float = 0.95
    tau: float = 0.05
    batch_size: int = 256
    # Transitions kept; the run's own length by default: nothing is dropped, and a checkpoint's replay
    # buffer (SB3 pickles its whole capacity) is no larger than the run. A resume with a larger total_timesteps
    # grows the checkpoint's buffer to it, every stored transition kept (rlik/training/resume.py grow_replay_buffer).
    buffer_size: int = "${total_timesteps}"  # type: ignore[assignment]  (an OmegaConf interpolation)
    learning_starts: int = 1000
    train_freq: int = 1  # env steps (per env) between updates
    gradient_steps: int = 1  # per update; -1 means as many as env steps collected
    action_noise: ActionNoiseConfig = field(default_factory=ActionNoiseConfig)
    her: HerConfig = field(default_factory=HerConfig)


@dataclass
class DDPGConfig(OffPolicyConfig):
    n_critics: int = 1  # the original DDPG's single critic
    # Weight of the actor's mean squared pre-tanh action in its loss (rlik/policy/networks.py): keeps the
    # deterministic actor out of tanh saturation (bang-bang torques). 0: SB3's plain actor.
    saturation_cost: float = 0.0


@dataclass
class TD3Config(DDPGConfig):
    name: str = "td3"
    n_critics: int = 2
    policy_delay: int = 2
    target_policy_noise: float = 0.2
    target_noise_clip: float = 0.5


@dataclass
class SACConfig(OffPolicyConfig):
    name: str = "sac"
    ent_coef: str = "auto"
    action_noise: ActionNoiseConfig = field(default_factory=lambda: ActionNoiseConfig(type="none"))


@dataclass
class TQCConfig(SACConfig):
    """sb3-contrib TQC: SAC with distributional critics whose highest quantiles are dropped from the target."""

    name: str = "tqc"
    n_quantiles: int = 25  # per critic
    top_quantiles_to_drop_per_net: int = 2


@dataclass
class CrossQConfig(SACConfig):
    """sb3-contrib CrossQ: SAC with BatchRenorm critics and no target networks (so no ``tau``)."""

    name: str = "crossq"
    tau: Optional[float] = None  # noqa: UP045  (no target networks: must stay null)
    policy_delay: int = 3  # critic updates per actor update
    batch_norm_momentum: float = 0.01
    renorm_warmup_steps: int = 100_000  # updates before BatchRenorm's corrections take full effect


# Roles of the schema keys. The policy's keyword arguments (network shape, critics), not the algorithm's:
POLICY_KEYS = ("net_arch", "n_critics", "n_quantiles", "batch_norm_momentum", "renorm_warmup_steps")
# rlik's own keys, read by the factory and the callbacks; every other key is a keyword argument of the SB3 class.
RLIK_KEYS = (
    "name",
    "action_noise",
    "her",
    "saturation_cost",
    "learning_rate_final",
    "learning_rate_decay_start",
    "fused_optimizer",
    "actor_average_start",
    "goal_error_scales",
)
# Hyperparameters SB3 reads afresh at every update, so a resumed run may change them (say, a lower learning rate
# to fine-tune); the other keys shape the networks, exploration or the replay buffer, which a checkpoint fixes.
RESUMABLE_KEYS = (
    "learning_rate",
    "learning_rate_final",
    "learning_rate_decay_start",
    "batch_size",
    "gradient_steps",
    "train_freq",
    "learning_starts",
    "gamma",
    "tau",
    "actor_average_start",
)


@dataclass(frozen=True)
class Algorithm:
    """One algorithm rlik trains.

    :param sb3_class: the SB3 (or sb3-contrib) class that trains, saves and loads its models.
    :param schema: its config dataclass, registered as ``algo/schema_<name>`` for ``conf/algo/<name>.yaml``.
    :param optimizer_defaults: Adam keywords its policy sets only when given no ``optimizer_kwargs``; kept when
        ``algo.fused_optimizer`` passes some.
    """

    sb3_class: type[OffPolicyAlgorithm]
    schema: type[OffPolicyConfig]
    optimizer_defaults: Mapping[str, Any] = field(default_factory=dict)


ALGORITHMS: dict[str, Algorithm] = {
    "ddpg": Algorithm(DDPG, DDPGConfig),
    "td3": Algorithm(TD3, TD3Config),
    "sac": Algorithm(SAC, SACConfig),
    "tqc": Algorithm(TQC, TQCConfig),
    "crossq": Algorithm(MultiInputCrossQ, CrossQConfig, optimizer_defaults={"betas": (0.5, 0.999)}),
}


def algorithm_named(name: str) -> Algorithm:
    """The registry entry of ``name`` (``algo.name``).

    :raises ValueError: an unknown name, with the names to choose from.
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algo '{name}'; choose algo= one of {sorted(ALGORITHMS)}.")
    return ALGORITHMS[name]
