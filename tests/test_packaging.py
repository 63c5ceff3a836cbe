"""A non-editable install works on its own (issues 23 and 36): the wheel built from this checkout, installed into
a fresh venv that sees the installed dependencies but not the checkout, installs one import package, ``rlik``
(and its Hydra launchers in Hydra's plugin namespace), makes every env, trains with ``rlik-train``, evaluates with
``rlik-evaluate`` and acts with README's ``load_policy`` lines, all from a directory outside the checkout that
holds a user's own ``envs/`` package; another Hydra app's ``hydra/launcher=ray`` loads nothing of rlik.

The wheel is built offline (``--no-build-isolation``, with the setuptools of the dev extra) from a copy of
the checkout, so nothing is written into the working tree. The fresh venv gets no pip and no packages of its
own beyond the wheel: a ``.pth`` file adds this interpreter's site-packages for the dependencies (a path line
does not run the ``.pth`` files there, so the editable install of the checkout stays out).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import pytest
from conftest import TINY
from rlik.envs import G1
from rlik.envs.urdf_files import resolve_urdf

import rlik  # noqa: F401  (registers the ids the installed package must register too)

REPO = Path(__file__).resolve().parents[1]
# Never part of the wheel, and possibly large (training outputs): left out of the copy it is built from.
NOT_BUILT_FROM = shutil.ignore_patterns(
    ".git", ".venv", "outputs", "multirun", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "wandb"
)
# The G1 ids need the robots extra (example-robot-data's URDF and meshes); the wheel's venv sees what this one has.
try:
    ROBOTS_EXTRA = resolve_urdf(G1["urdf"]).is_file()
except FileNotFoundError:
    ROBOTS_EXTRA = False
NEEDS_ROBOTS = {"G1Reach-v0", "G1BimanualReach-v0"}
ENV_IDS = sorted(
    env_id
    for env_id, spec in gym.registry.items()
    if str(spec.entry_point).startswith("rlik.") and (ROBOTS_EXTRA or env_id not in NEEDS_ROBOTS)
)
# UrdfReach-v0 and ArmReach-v0 take any URDF: one of ours by name, found inside the installed package.
PLANAR_URDF = {"urdf": "planar_arm_2link.urdf", "end_effector": "fingertip"}
MAKE_KWARGS = {"UrdfReach-v0": PLANAR_URDF, "ArmReach-v0": PLANAR_URDF}
# A few seconds of training with observation normalisation (statistics beside the models), no periodic
# evaluation or checkpoint (the final checkpoint is still written), no wandb, no video.
TINY_TRAIN = [o for o in TINY if not o.startswith(("eval.", "checkpoint.freq", "wandb."))] + [
    "eval.freq=0",
    "eval.final_goals=2",
    "checkpoint.freq=0",
    "normalize_observations=true",
    "normalize_goals=false",  # the planar preset's goal-error features take goals in metres
    "wandb.mode=disabled",
    "wandb.video_episodes=0",
]
# README's lines (keep the two in step), then what the test reads back (JSON after RESULT on stdout).
README_SNIPPET = """
import gymnasium as gym
from rlik.policy.loading import load_policy

policy = load_policy("outputs/latest")  # a run directory; model="final" (default), "best" or "latest"
env = gym.make(policy.env_id, **policy.env_kwargs)  # the run's env config, max_episode_steps included
observation, info = env.reset(seed=0)
action = policy.act(observation)  # numpy only (rlik/policy/lean.py), the run's normalisation included; a batch works too
"""
SNIPPET_CHECKS = """
import json
import numpy as np

batch = {key: np.stack([value, value, value]) for key, value in observation.items()}
errors = {}
for run_dir, model in (("nowhere", "final"), ("outputs/latest", "bestest")):
    try:
        load_policy(run_dir, model)
    except (FileNotFoundError, ValueError) as error:
        errors[f"{run_dir}:{model}"] = f"{type(error).__name__}: {error}"
print("RESULT", json.dumps({
    "action": action.tolist(),
    "env_id": policy.env_id,
    "env_kwargs": policy.env_kwargs,
    "batch_shape": list(policy.act(batch).shape),
    "action_space_shape": list(env.action_space.shape),
    "max_episode_steps": env.spec.max_episode_steps,
    "normalised_keys": sorted(policy.normalization),
    "latest_action": load_policy("outputs/latest", model="latest").act(observation).tolist(),
    "errors": errors,
}))
"""
# SB3's own load, before anything of the package is imported: the final model (its policy_kwargs name rlik's
# feature extractor, which unpickling imports) loads without an env and acts on observations normalised with the
# statistics saved beside it.
PLAIN_SB3 = """
import json, pickle, sys
import gymnasium as gym
from stable_baselines3 import DDPG

model = DDPG.load("outputs/latest/final_model.zip", device="cpu")
with open("outputs/latest/final_model_vecnormalize.pkl", "rb") as handle:
    statistics = pickle.load(handle)
import rlik  # registers the ids

env = gym.make(sys.argv[1], **json.loads(sys.argv[2]))  # the run's env
observation, info = env.reset(seed=0)
action, _ = model.predict(statistics.normalize_obs(observation), deterministic=True)
print("RESULT", json.dumps({"action": action.tolist()}))
"""
WHERE_FROM = """
import importlib, json, sys
import gymnasium as gym
import rlik
import rlik.evaluate, rlik.train
from rlik.envs.urdf_files import resolve_urdf
from rlik.paths import CONF_DIR, URDF_DIR

made = {}
for env_id, kwargs in json.loads(sys.argv[2]).items():
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    made[env_id] = str(resolve_urdf(env.unwrapped.robot.urdf))
    env.close()
plugins = [importlib.import_module(name) for name in json.loads(sys.argv[1])]
modules = {m.__name__: m.__file__ for m in (rlik, rlik.envs, rlik.train, rlik.evaluate, *plugins)}
print("RESULT", json.dumps({"modules": modules, "urdf_dir": str(URDF_DIR), "conf_dir": str(CONF_DIR), "made": made, "path": sys.path}))
"""
# An unrelated Hydra app: hydra-ray-launcher's own launcher config, and nothing of rlik imported (Hydra's plugin
# scan imports hydra_plugins.rlik_launchers, which imports no rlik module).
OTHER_HYDRA_APP = """
import json, sys
from hydra import compose, initialize

with initialize(version_base="1.3", config_path=None):
    cfg = compose(overrides=["hydra/launcher=ray"], return_hydra_config=True)
loaded = sorted(name for name in sys.modules if name == "rlik" or name.startswith("rlik."))
print("RESULT", json.dumps({"launcher": cfg.hydra.launcher._target_, "rlik_modules": loaded}))
"""
# A user's own package named like our checkout's env folder, in the directory they work in.
USERS_ENVS = "raise ImportError('the user's own envs package: rlik must not import it')\n"


@dataclass(frozen=True)
class Install:
    """The wheel installed into a fresh venv, and a directory outside the checkout to run in."""

    wheel: Path
    bin: Path
    site_packages: Path
    work: Path

    def run(self, *command: str, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """``command`` (a console script of the venv, or its ``python``) in ``cwd`` (default ``work``); no PYTHONPATH,
        no wandb."""
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "WANDB_", "VIRTUAL_ENV"))}
        environment["WANDB_SILENT"] = "true"
        executable = str(self.bin / command[0])
        return subprocess.run(
            [executable, *command[1:]],
            cwd=cwd or self.work,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code: str, *args: str, cwd: Path | None = None) -> dict:
        """Run ``code`` in the venv's python; the JSON it prints after ``RESULT`` (PyBullet prints to stdout too, its
        URDF warnings without a line end: the G1's run into the next print)."""
        result = self.run("python", "-c", code, *args, cwd=cwd)
        check(result)
        (line,) = (line for line in result.stdout.splitlines() if "RESULT " in line)
        return json.loads(line.partition("RESULT ")[2])


def check(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    root = tmp_path_factory.mktemp("packaging")
    source, dist, venv_dir, work = root / "source", root / "dist", root / "venv", root / "elsewhere"
    shutil.copytree(REPO, source, ignore=NOT_BUILT_FROM)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    # An absolute path: pip would take a bare directory name for a package on the index.
    check(
        subprocess.run(
            [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(dist), str(source)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    )
    (wheel,) = dist.glob("rlik-*.whl")
    venv.create(venv_dir, with_pip=False, symlinks=os.name != "nt")
    python = venv_dir / "bin" / "python"
    check(
        subprocess.run(
            [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    )
    purelib = [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    site_packages = Path(subprocess.check_output(purelib, text=True).strip())
    dependencies = sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")})
    (site_packages / "dependencies.pth").write_text("\n".join(dependencies) + "\n")
    (work / "envs").mkdir(parents=True)
    (work / "envs" / "__init__.py").write_text(USERS_ENVS)
    return Install(wheel, venv_dir / "bin", site_packages, work)


@pytest.fixture(scope="module")
def trained(installed: Install) -> Path:
    """A tiny run trained by ``rlik-train`` in the directory outside the checkout: its ``outputs/latest``."""
    check(installed.run("rlik-train", *TINY_TRAIN))
    return installed.work / "outputs" / "latest"


def test_wheel_holds_the_packages_data_and_scripts(installed: Install) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = wheel.read(entry_points).decode()
    expected = {str(p.relative_to(REPO)) for p in (REPO / "rlik").rglob("*.py")}
    expected |= {str(p.relative_to(REPO)) for p in (REPO / "hydra_plugins").glob("*.py")}
    expected |= {f"rlik/envs/{p.relative_to(REPO / 'envs')}" for p in (REPO / "envs").glob("*.py")}
    expected |= {f"rlik/urdf/{p.relative_to(REPO / 'urdf')}" for p in (REPO / "urdf").rglob("*") if p.is_file()}
    expected |= {f"rlik/conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*.yaml")}
    assert expected <= names, sorted(expected - names)
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"rlik", "hydra_plugins"}  # nothing generic (envs, train, ...) in site-packages
    assert "rlik-train = rlik.train:cli" in scripts and "rlik-evaluate = rlik.evaluate:cli" in scripts
    assert (
        "rlik-plot = rlik.evaluation.learning_curves:cli" in scripts and "rlik-enjoy = rlik.evaluate:enjoy" in scripts
    )


@pytest.mark.parametrize("where", ["beside a user's envs/ package", "in an empty directory"])
def test_installed_package_makes_every_env_without_the_checkout(installed: Install, where: str, tmp_path: Path) -> None:
    plugins = [f"hydra_plugins.{p.stem}" for p in (REPO / "hydra_plugins").glob("*.py")]  # our Hydra launchers
    make = {env_id: MAKE_KWARGS.get(env_id, {}) for env_id in ENV_IDS}
    cwd = installed.work if where.startswith("beside") else tmp_path
    report = installed.python(WHERE_FROM, json.dumps(plugins), json.dumps(make), cwd=cwd)
    assert sorted(report["made"]) == ENV_IDS and len(ENV_IDS) == 6 + 2 * ROBOTS_EXTRA
    assert len(report["modules"]) == 4 + len(plugins)
    for module, path in report["modules"].items():
        assert Path(path).is_relative_to(installed.site_packages), f"{module} imported from {path}"
    assert Path(report["urdf_dir"]) == installed.site_packages / "rlik" / "urdf"
    assert Path(report["conf_dir"]) == installed.site_packages / "rlik" / "conf"
    # Our robots from the installed package, the others (the KUKA's, the G1's) from their own packages: none from here.
    for env_id in ("PlanarArmReach-v0", "HumanoidReach-v0", "ArmReach-v0"):
        assert Path(report["made"][env_id]).is_relative_to(installed.site_packages / "rlik" / "urdf"), env_id
    venv = Path(sys.prefix).resolve()  # CI's venv lies inside the checkout: its packages are not the checkout's files
    for urdf in map(Path, report["made"].values()):
        assert not urdf.resolve().is_relative_to(REPO) or urdf.resolve().is_relative_to(venv), urdf
    assert not any((installed.work / entry).resolve() == REPO for entry in report["path"])  # "": the cwd


def test_console_scripts_train_and_evaluate_from_another_directory(installed: Install, trained: Path) -> None:
    for name in ("final_model.zip", "best_model.zip", "final_model_vecnormalize.pkl", "metrics.json"):
        assert (trained / name).is_file(), name
    check(installed.run("rlik-evaluate", "run=outputs/latest", "model=final", "n_episodes=2", "wandb.mode=disabled"))
    report = json.loads((trained / "eval_policy.json").read_text())
    assert report["n_episodes"] == 2 and report["lean_action_max_difference"] < 1e-5


def test_readme_snippet_acts_like_sb3_on_the_installed_package(installed: Install, trained: Path) -> None:
    result = installed.python(README_SNIPPET + SNIPPET_CHECKS)
    assert len(result["action"]) == 2 and result["batch_shape"] == [3, 2] and result["action_space_shape"] == [2]
    assert result["max_episode_steps"] == 25  # the run's env, not the registered default
    assert result["normalised_keys"] == ["observation"]  # normalize_goals=false
    assert result["latest_action"] == pytest.approx(result["action"], abs=1e-6)  # the last checkpoint is final
    missing, unknown = result["errors"]["nowhere:final"], result["errors"]["outputs/latest:bestest"]
    assert missing.startswith("FileNotFoundError: run directory nowhere does not exist;") and "\n" not in missing
    assert unknown.startswith("ValueError: unknown model 'bestest'; choose one of") and "\n" not in unknown
    plain = installed.python(PLAIN_SB3, result["env_id"], json.dumps(result["env_kwargs"]))
    assert plain["action"] == pytest.approx(result["action"], abs=1e-5)


def test_another_hydra_apps_ray_launcher_loads_nothing_of_rlik(installed: Install) -> None:
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    report = installed.python(OTHER_HYDRA_APP)
    assert report == {"launcher": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher", "rlik_modules": []}
