"""Where rlik's data directories are, in either layout of the project.

An installed wheel holds ``urdf/`` and ``conf/`` inside the package (pyproject.toml maps the checkout's top-level
folders there as package data); a source checkout, and an editable install of one, keep them at the top level
beside ``rlik/``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The data directory ``name`` (``"urdf"``, ``"conf"``): the wheel's copy, else the checkout's."""
    packaged = PACKAGE_DIR / name
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / name


URDF_DIR = data_dir("urdf")  # the bundled robots (planar arm, humanoid)
CONF_DIR = data_dir("conf")  # Hydra's config directory: train.py's config.yaml, evaluate.py's evaluate.yaml
