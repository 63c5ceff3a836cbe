"""``python evaluate.py``'s schema (conf/evaluate.yaml): what to evaluate, which controllers, on how many goals,
and the checks its types cannot express."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from rlik.control import BalancedJacobianConfig, FabrikConfig, JacobianConfig, PyBulletIKConfig
from rlik.training.config import WandbConfig

# model= with run=: the run-level zip of that name (RunDir.model); "latest" is the newest complete checkpoint.
MODELS = ("best", "final")
# The model evaluate.py, its sweep= ranking and load_policy take unless told: the one training ended with.
# best_model.zip is the top of several noisy periodic evaluations on few goals (eval.periodic_goals), a
# selection biased upwards, and in a short run two configurations' best models can both be the first evaluation's.
DEFAULT_MODEL = "final"


@dataclass
class EvaluateConfig:
    """``python evaluate.py`` (conf/evaluate.yaml): a run's policy, or classical controllers, on held-out goals."""

    run: Optional[str] = None  # noqa: UP045  (a training run directory, .hydra/config.yaml inside)
    checkpoint: Optional[str] = None  # noqa: UP045  (a model zip; its run directory is found above it)
    sweep: Optional[str] = None  # noqa: UP045  (a multirun directory: evaluate every job and rank them)
    controller: Any = "policy"  # one of CONTROLLERS, or a list of them: one table on the same goals
    # The classical controllers' gains; slower ones (jacobian.kp=25 jacobian.kd=10, fabrik.kp=100 fabrik.kd=20)
    # keep a free-standing humanoid up more often.
    jacobian: JacobianConfig = field(default_factory=JacobianConfig)
    fabrik: FabrikConfig = field(default_factory=FabrikConfig)
    jacobian_balance: BalancedJacobianConfig = field(default_factory=BalancedJacobianConfig)
    pybullet_ik: PyBulletIKConfig = field(default_factory=PyBulletIKConfig)
    model: str = DEFAULT_MODEL  # with run= and no checkpoint=: final | best | latest (newest complete checkpoint)
    n_episodes: int = 200
    goal_seed: Optional[int] = None  # noqa: UP045  (None: the run's eval.goal_seed, train.py's final goals)
    env: dict[str, Any] = field(default_factory=dict)  # overrides of the run's env keys: env.success_threshold=0.005
    video: bool = False  # eval_<controller>.mp4 of the first video_episodes goals
    video_episodes: int = 3
    plots: bool = False  # eval_<controller>_distance.png and eval_<controller>_goals.png
    export: bool = False  # instead of evaluating: the model's actor as policy.npz (numpy only) and policy.onnx
    # watch=true (rlik-enjoy), instead of evaluating: each controller in PyBullet's window, on random goals from
    # goal_seed (unset: a new seed, printed) or on watch_goals ([[x,y,z],...], m; one x,y,z per end effector).
    watch: bool = False
    watch_episodes: int = 5
    watch_goals: Optional[list[Any]] = None  # noqa: UP045
    watch_speed: float = 1.0  # simulated time per wall-clock time: 1 is real time, 0.5 slow motion
    torch_threads: int = 1
    wandb: WandbConfig = field(default_factory=WandbConfig)  # the run's own values, the command line's on top


# controller=: the run's policy, or a classical controller of rlik/control/ (rlik/evaluation/run.py's
# CLASSICAL) whose gains are the EvaluateConfig node of the same name.
CONTROLLERS = ("policy", "jacobian", "fabrik", "jacobian_balance", "pybullet_ik")


def register_evaluate_config() -> None:
    """Put ``EvaluateConfig`` in Hydra's ConfigStore; ``conf/evaluate.yaml`` extends it."""
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


def controller_names(cfg: Any) -> list[str]:
    """``controller=jacobian`` or ``controller=[policy,jacobian]`` as a list of names.

    :param cfg: an ``EvaluateConfig`` (or any object with its ``controller``).
    """
    return [cfg.controller] if isinstance(cfg.controller, str) else list(cfg.controller)


def validate_evaluate_config(cfg: Any) -> None:
    """Checks the evaluate schema's types cannot express; raises ValueError naming the key and the fix.

    :param cfg: the composed ``EvaluateConfig``.
    """
    names = controller_names(cfg)
    unknown = [name for name in names if name not in CONTROLLERS]
    if unknown or not names:
        raise ValueError(
            f"unknown controller '{unknown[0] if unknown else ''}'; choose controller= one of {CONTROLLERS}, "
            "or a list of them, e.g. controller=[policy,jacobian]."
        )
    if cfg.sweep and len(names) > 1:
        raise ValueError("sweep= ranks the jobs by one controller: give controller= one name.")
    if cfg.model not in (*MODELS, "latest"):
        raise ValueError(f"unknown model '{cfg.model}'; choose model= one of {(*MODELS, 'latest')}.")
    if cfg.goal_seed is not None and cfg.goal_seed < 0:
        raise ValueError(f"goal_seed must be >= 0 (null: the run's eval.goal_seed), got {cfg.goal_seed}.")
    if cfg.n_episodes < 1 or cfg.video_episodes < 1:
        raise ValueError(f"n_episodes and video_episodes must be >= 1, got {cfg.n_episodes}, {cfg.video_episodes}.")
    if cfg.watch and (cfg.sweep or cfg.export):
        raise ValueError("watch=true shows one run's controllers: give it with run= or checkpoint=, without sweep=.")
    if cfg.watch_episodes < 1 or not cfg.watch_speed > 0:
        raise ValueError(
            f"watch_episodes must be >= 1 and watch_speed > 0, got {cfg.watch_episodes}, {cfg.watch_speed}."
        )
    if cfg.watch_goals is not None and not cfg.watch:
        raise ValueError("watch_goals= chooses the goals of watch=true; add watch=true (or run rlik-enjoy).")
    if cfg.export and (cfg.sweep or names != ["policy"]):
        raise ValueError("export=true writes a run's policy: give it with run= or checkpoint=, controller=policy.")
    if cfg.sweep and (cfg.run or cfg.checkpoint):
        raise ValueError("sweep= evaluates every job of a multirun: give it without run= or checkpoint=.")
    if not (cfg.sweep or cfg.run or cfg.checkpoint):
        raise ValueError("nothing to evaluate; pass run=<run dir>, checkpoint=<model .zip> or sweep=<multirun dir>.")
