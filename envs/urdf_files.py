"""URDF files: finding them (a path, this project's ``urdf/``, ``pybullet_data``, ``package://`` URIs) and
checking them before PyBullet loads them, so that a broken file fails with its own cause instead of PyBullet's
generic error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pybullet_data

from rlik.paths import URDF_DIR

PACKAGE_SCHEME = "package://"
MESH_SUFFIXES = (".obj", ".stl", ".dae", ".cdf")  # the mesh formats PyBullet's URDF importer reads


def package_folders(package: str, urdf: Path | None = None) -> list[Path]:
    """Folders that may hold the ROS package ``package``, in the order a ``package://<package>/...`` path is
    looked up: the URDF's own folders (a folder above it named ``package``, or one holding ``package``), the
    ``ROS_PACKAGE_PATH`` entries, ``share/<package>`` of the ``AMENT_PREFIX_PATH`` and ``CMAKE_PREFIX_PATH`` prefixes,
    and description packages installed with pip (``example-robot-data``'s ``cmeel.prefix/share``)."""
    above = list(urdf.parents) if urdf is not None else []
    folders = [folder for folder in above if folder.name == package] + [folder / package for folder in above]
    for entry in filter(None, os.environ.get("ROS_PACKAGE_PATH", "").split(os.pathsep)):
        folders += [Path(entry)] if Path(entry).name == package else [Path(entry) / package]
    for variable in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH"):
        folders += [
            Path(entry) / "share" / package for entry in filter(None, os.environ.get(variable, "").split(os.pathsep))
        ]
    folders += [Path(entry) / "cmeel.prefix" / "share" / package for entry in sys.path if entry]
    return folders


def resolve_package_path(uri: str, urdf: Path | None = None) -> Path | None:
    """The file a ``package://<package>/<path>`` URI names (see ``package_folders``), or None if none exists."""
    package, _, rest = uri[len(PACKAGE_SCHEME) :].partition("/")
    for folder in package_folders(package, urdf):
        if (folder / rest).is_file():
            return (folder / rest).resolve()
    return None


def resolve_urdf(path: str | os.PathLike) -> Path:
    """Find a URDF: as given, else in this project's ``urdf/``, else in ``pybullet_data``; a ``package://`` URI
    through the ROS package folders (``package_folders``).

    Raises ``FileNotFoundError`` naming every place looked in.
    """
    if str(path).startswith(PACKAGE_SCHEME):
        found = resolve_package_path(str(path))
        if found is None:
            raise FileNotFoundError(
                f"URDF '{path}' not found: no package '{str(path)[len(PACKAGE_SCHEME) :].split('/')[0]}' holds it "
                "(looked in ROS_PACKAGE_PATH, AMENT_PREFIX_PATH, CMAKE_PREFIX_PATH and pip-installed description "
                "packages); install the package (pip install -e '.[robots]' for example-robot-data) or add its "
                "folder to ROS_PACKAGE_PATH."
            )
        return found
    candidates = [Path(path)]
    if not Path(path).is_absolute():
        candidates += [URDF_DIR / path, Path(pybullet_data.getDataPath()) / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"URDF '{path}' not found (looked in: {looked}); pass an existing file path, "
        f"a name under {URDF_DIR}, a path inside pybullet_data or a package:// URI."
    )


def check_urdf_xml(path: Path) -> ET.Element:
    """Parse the URDF as XML so a malformed file fails with the parser's line and column."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"URDF '{path}' is malformed XML ({err}); fix the file.") from None
    if root.tag != "robot":
        raise ValueError(f"URDF '{path}' has root <{root.tag}>, expected <robot>; fix the file.")
    return root


def find_mesh(path: Path, filename: str) -> Path | None:
    """The mesh file ``filename`` of the URDF at ``path``: a ``package://`` URI through the ROS package folders,
    else where PyBullet looks (``model://`` dropped): as given, below the URDF's folder and each folder above it,
    the working directory and the two above it, and ``pybullet_data``."""
    if filename.startswith(PACKAGE_SCHEME) and (found := resolve_package_path(filename, path)) is not None:
        return found
    for scheme in (PACKAGE_SCHEME, "model://"):
        if filename.startswith(scheme):
            filename = filename[len(scheme) :]
            break
    name = Path(filename)
    folders = [*Path(path).parents, Path("."), Path(".."), Path("../.."), Path(pybullet_data.getDataPath())]
    return next(
        (candidate for candidate in [name, *(folder / name for folder in folders)] if candidate.is_file()), None
    )


def check_urdf_contents(path: Path, root: ET.Element) -> None:
    """Raise ``ValueError`` for what makes PyBullet refuse a well-formed URDF with only a generic error: a revolute
    or prismatic joint without ``<limit>``, or a mesh file it cannot find or read."""
    for joint in root.iter("joint"):
        kind = joint.get("type")
        if kind in ("revolute", "prismatic") and joint.find("limit") is None:
            hint = ' (a revolute joint without stops is type="continuous")' if kind == "revolute" else ""
            raise ValueError(
                f"URDF '{path}': {kind} joint '{joint.get('name')}' has no <limit>; add "
                f'<limit lower="..." upper="..." effort="..." velocity="..."/> to it{hint}.'
            )
    for link in root.iter("link"):
        for mesh in link.iter("mesh"):
            filename = mesh.get("filename", "")
            if Path(filename).suffix.lower() not in MESH_SUFFIXES:
                raise ValueError(
                    f"URDF '{path}': link '{link.get('name')}' has mesh '{filename}', a format PyBullet cannot "
                    f"read; convert it to one of {', '.join(MESH_SUFFIXES)}."
                )
            if find_mesh(path, filename) is None:
                raise ValueError(
                    f"URDF '{path}': mesh file '{filename}' of link '{link.get('name')}' not found (looked beside "
                    "the URDF, in the folders above it, in ROS_PACKAGE_PATH, AMENT_PREFIX_PATH and pip-installed "
                    "description packages, and in pybullet_data); fix the filename or put the mesh there."
                )


def with_package_meshes_resolved(path: Path, root: ET.Element) -> str | None:
    """The URDF's text with every ``package://`` mesh replaced by its absolute path, or None if it has none.

    PyBullet drops ``package://`` and searches only relative to the URDF and the working directory, which misses
    packages found through ``ROS_PACKAGE_PATH`` or installed elsewhere. Call after ``check_urdf_contents``.
    """
    meshes = [mesh for mesh in root.iter("mesh") if mesh.get("filename", "").startswith(PACKAGE_SCHEME)]
    if not meshes:
        return None
    for mesh in meshes:
        mesh.set("filename", str(find_mesh(path, mesh.get("filename"))))
    return ET.tostring(root, encoding="unicode")


@contextlib.contextmanager
def loadable_urdf(path: str | os.PathLike) -> Iterator[tuple[Path, Path]]:
    """The URDF found (``resolve_urdf``) and checked (``check_urdf_xml``, ``check_urdf_contents``), and the file to
    hand to PyBullet: the URDF itself, or a temporary copy, valid inside the ``with``, whose ``package://`` meshes
    are absolute paths (``with_package_meshes_resolved``). Yields ``(found, to_load)``.

    PyBullet reports the causes these checks name only on its own stderr, and raises a generic error.
    """
    resolved = resolve_urdf(path)
    root = check_urdf_xml(resolved)
    check_urdf_contents(resolved, root)
    rewritten = with_package_meshes_resolved(resolved, root)
    if rewritten is None:
        yield resolved, resolved
        return
    # A rewritten copy beside nothing else: its meshes are absolute paths, and PyBullet reads them all at load.
    with tempfile.TemporaryDirectory(prefix="rlik-urdf-") as folder:
        loaded = Path(folder) / resolved.name
        loaded.write_text(rewritten)
        yield resolved, loaded
