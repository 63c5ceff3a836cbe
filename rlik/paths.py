"""Where rlik's data directories are, in either layout of the project.

An installed wheel holds ``urdf/`` and ``conf/`` inside the package (pyproject.toml maps the checkout's top-level
folders there as package data); a source checkout, and an editable install of one, keep them at the top level
beside ``rlik/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The data directory ``name`` (``"urdf"``, ``"conf"``): the wheel's copy, else the checkout's."""
    packaged = PACKAGE_DIR / name
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / name


URDF_DIR = data_dir("urdf")  # the bundled robots (planar arm, humanoid)
CONF_DIR = data_dir("conf")  # Hydra's config directory: train.py's config.yaml, evaluate.py's evaluate.yaml


@dataclass(frozen=True)
class RunDir:
    """A training run's directory, its files by name: the one place its layout is written.

    ``.hydra/config.yaml`` (the composed config), ``checkpoints/step_<N>/``, ``run.json`` (wandb id and group),
    ``derived.json`` (ArmReach-v0's derived settings), ``best_model.zip``, ``final_model.zip`` (with
    ``<model>_vecnormalize.pkl`` beside them when observations are normalised), ``metrics.json`` (the final
    evaluation), ``progress.csv``, ``train.log``, ``video.mp4``; evaluate.py adds ``eval_<controller>.json``,
    ``eval_table.json`` / ``.csv``, plots, and ``policy.npz`` / ``policy.onnx``.

    :param path: the directory.
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / ".hydra" / "config.yaml"

    @property
    def hydra_config(self) -> Path:
        """Hydra's own settings of the run (its overrides and config choices)."""
        return self.path / ".hydra" / "hydra.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def run_info(self) -> Path:
        return self.path / "run.json"

    @property
    def derived(self) -> Path:
        return self.path / "derived.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def progress(self) -> Path:
        return self.path / "progress.csv"

    @property
    def video(self) -> Path:
        return self.path / "video.mp4"

    def model(self, name: str) -> Path:
        """``best_model.zip`` or ``final_model.zip``: ``name`` is ``"best"`` or ``"final"``."""
        return self.path / f"{name}_model.zip"

    def run_files(self) -> list[Path]:
        """What a run leaves here (Hydra's config first): a new run refuses a directory holding any of them."""
        return [self.config, self.checkpoints, self.run_info, self.model("final"), self.metrics]

    def is_run(self) -> bool:
        """Whether this is a training run's directory (its composed config is there)."""
        return self.config.is_file()
