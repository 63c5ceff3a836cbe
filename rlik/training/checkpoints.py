"""Crash-safe checkpoints: each is a directory written under a temporary name, fsynced, then renamed.

A rename is atomic, so ``checkpoints/step_<N>/`` either exists whole or not at all; a crash
mid-write leaves only a ``.tmp-<pid>-*`` directory, which readers ignore. Readers never delete: the
temporary may belong to a trainer still writing it. Only its owner removes it, or the next trainer of
the run once the owner pid is dead (``remove_stale_temporaries``, under the run's ``RunLock``).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import yaml
from omegaconf import OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from rlik.ops import interrupts
from rlik.paths import RunDir
from rlik.training.averaging import ActorAverage

MODEL_FILE = "model.zip"
REPLAY_FILE = "replay_buffer.pkl"
VECNORMALIZE_FILE = "vecnormalize.pkl"
AVERAGE_FILE = "actor_average.pt"  # rlik.training.averaging.ActorAverage, when the run averages its actor
STATE_FILE = "state.json"  # written last: its presence marks a complete checkpoint
LOCK_FILE = ".lock"  # in the run directory: holds the pid of the process training it


class DiskWriteError(OSError):
    """A file of the run could not be written (a full disk, a read-only directory); its temporary is gone."""

    def __init__(self, path: Path, error: BaseException) -> None:
        # torch.save to a path reports a full disk as a RuntimeError ("unexpected pos ..."), not an OSError.
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
        super().__init__(
            f"could not write {path} ({reason}); free space on its disk or make it writable (the files "
            "already there are intact)"
        )
        self.strerror = reason  # what callers that name their own fix print


def write_failed(path: Path, error: BaseException) -> BaseException:
    """What a write of ``path`` that failed raises: ``Interrupted`` if a signal forced the exit meanwhile (torch
    turns the exception a signal handler raised inside its writer into a RuntimeError), else ``DiskWriteError``."""
    forced = interrupts.SIGNAL_STOP.forced
    return interrupts.Interrupted(forced) if forced is not None else DiskWriteError(path, error)


def fsync_tree(path: Path) -> None:
    """Flush every file below ``path`` and the directories themselves to disk."""
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(Path(root))


def fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename to ``path``: readers never see a partial file."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except (OSError, RuntimeError) as error:
        raise write_failed(path, error) from error
    finally:
        tmp.unlink(missing_ok=True)


def atomic_symlink(link: Path, target: Path) -> None:
    """Point ``link`` at ``target``, replacing any older link in one rename."""
    tmp = link.with_name(f".tmp-{os.getpid()}-{link.name}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)


def json_text(data: Any) -> str:
    """``data`` as standard JSON, indented, with a final newline: NaN and +-inf become ``null``.

    Python's ``json`` writes them as the bare words ``NaN`` and ``Infinity``, which are not JSON: JavaScript's
    ``JSON.parse``, ``jq`` and strict parsers refuse the whole file. A summary is NaN where it has no value (no goal
    reached: no time to reach), which ``null`` says.
    """
    return json.dumps(_finite(data), indent=2, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float inside it (dict values, list items) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def atomic_write_json(path: Path, data: Any) -> None:
    """``data`` as standard JSON (``json_text``) in ``path``, written atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json_text(data)))


def statistics_path(model_path: Path) -> Path:
    """Where ``save_model`` puts a model's observation-normalisation statistics: ``<name>_vecnormalize.pkl``."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}_{VECNORMALIZE_FILE}")


def save_model(model: BaseAlgorithm, path: Path) -> None:
    """Save an SB3 model zip atomically (the temporary name keeps the ``.zip`` suffix SB3 expects), with
    its ``VecNormalize`` statistics as they are now: the policy only works on observations normalised so.

    The replay-buffer settings stay out (checkpoints keep them, to resume): SB3 cannot build HER's buffer
    without an env, so without them ``DDPG.load(path)`` alone loads the model to act."""
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        atomic_write(statistics_path(path), lambda tmp: vec_normalize.save(str(tmp)))
    atomic_write(Path(path), lambda tmp: model.save(tmp, exclude=["replay_buffer_class", "replay_buffer_kwargs"]))


def save_checkpoint(
    directory: Path,
    model: OffPolicyAlgorithm,
    state: dict[str, Any],
    replay_buffer: bool = True,
    keep: int = 2,
    actor_average: ActorAverage | None = None,
) -> Path:
    """Write ``directory/step_<N>/`` (model, replay buffer, normalisation stats, actor average, state.json)
    atomically.

    Keeps the ``keep`` newest complete checkpoints.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step_{model.num_timesteps:012d}"
    tmp = directory / f".tmp-{os.getpid()}-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        model.save(tmp / MODEL_FILE)
        if replay_buffer:
            model.save_replay_buffer(tmp / REPLAY_FILE)
        vec_normalize = model.get_vec_normalize_env()
        if vec_normalize is not None:
            vec_normalize.save(str(tmp / VECNORMALIZE_FILE))
        if actor_average is not None:
            actor_average.save(tmp / AVERAGE_FILE)
        (tmp / STATE_FILE).write_text(json_text({**state, "num_timesteps": model.num_timesteps}))
        fsync_tree(tmp)
    except (OSError, RuntimeError) as error:
        shutil.rmtree(tmp, ignore_errors=True)  # a partial checkpoint helps nobody and holds the space
        raise write_failed(final, error) from error
    except BaseException:  # a signal that forces the exit (rlik/ops/interrupts.py): the newest complete one stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # same step saved again (e.g. a resume that did not advance)
        remove_checkpoint(final)
    os.replace(tmp, final)
    fsync_dir(directory)
    for old in complete_checkpoints(directory)[:-keep] if keep > 0 else []:
        remove_checkpoint(old)
    return final


def remove_checkpoint(checkpoint: Path) -> None:
    """Rename out of ``step_*`` first, so a crash mid-delete never leaves a half-deleted checkpoint."""
    trash = checkpoint.with_name(f".tmp-{os.getpid()}-delete-{checkpoint.name}")
    os.replace(checkpoint, trash)
    fsync_dir(checkpoint.parent)
    shutil.rmtree(trash, ignore_errors=True)


def is_complete(checkpoint: Path) -> bool:
    """A checkpoint directory with its state file, a readable model zip and readable JSON."""
    try:
        json.loads((checkpoint / STATE_FILE).read_text())
        with zipfile.ZipFile(checkpoint / MODEL_FILE) as archive:
            # SB3's "data" member: a cut-off zip can still open as the torch archive stored inside it.
            return "data" in archive.namelist() and archive.testzip() is None
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def complete_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first."""
    if not Path(directory).is_dir():
        return []
    found = [p for p in Path(directory).glob("step_*") if p.is_dir() and is_complete(p)]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint, or None. Reads only: ``.tmp-*`` leftovers are the writer's business."""
    checkpoints = complete_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove the ``.tmp-<pid>-*`` files and directories in ``directory`` whose owner pid is dead; return them.

    A live owner (a trainer, or an evaluation writing its JSON) is still writing its temporary: kept.
    """
    removed = []
    for leftover in Path(directory).glob(".tmp-*") if Path(directory).is_dir() else []:
        owner = leftover.name.split("-")[1]
        if owner.isdigit() and pid_alive(int(owner)):
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


class RunInUse(Exception):
    """Another live process trains in this run directory."""

    def __init__(self, run_dir: Path, lock_file: Any) -> None:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "?"  # "?": the holder has not written its pid yet
        super().__init__(
            f"run {run_dir} is in use by pid {holder} (train.py); wait for it to finish or stop it "
            f"(kill -INT {holder} saves a checkpoint), then resume."
        )


class RunDirectoryTaken(ValueError):
    """A new run (or sweep) was pointed at a directory that already holds another run; the message says so."""


def check_no_run_in(run_dir: Path) -> None:
    """Raise ``RunDirectoryTaken`` if ``run_dir`` holds any of ``RunDir.run_files``; reads only."""
    files = RunDir(run_dir)
    if not (found := [str(path.relative_to(files.path)) for path in files.run_files() if path.exists()]):
        return
    if latest_checkpoint(RunDir(run_dir).checkpoints) is None:
        fix = f"it has no checkpoint to resume: give this run another hydra.run.dir, or delete {run_dir}"
    else:
        fix = f"continue that run with python train.py resume={run_dir}, or give this one another hydra.run.dir"
    raise RunDirectoryTaken(f"{run_dir} already holds another run ({', '.join(found)}); {fix}.")


class RunLock:
    """An exclusive ``flock`` on ``<run dir>/.lock``, held until the ``with`` block ends or the process dies.

    The kernel drops a flock when its holder dies, however it dies, so a stale lock is never in the way.
    The file keeps the holder's pid, for the refusal message only.
    """

    # A new run's directory, locked before Hydra wrote into it (``claim``), until ``take`` hands the lock on.
    claimed: ClassVar[dict[Path, RunLock]] = {}

    def __init__(self, run_dir: Path) -> None:
        # "a+": creates the file if needed and leaves the holder's pid in place if the lock is refused.
        self.file = open(Path(run_dir) / LOCK_FILE, "a+")  # noqa: SIM115  (held open until __exit__)
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            error = RunInUse(run_dir, self.file)
            self.file.close()
            raise error from None
        self.file.truncate(0)
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        # The names in the directory before this start claimed it (None: it made the directory), to take back
        # what a failed start wrote (``undo_start``); None too for a lock taken after Hydra wrote its files.
        self.entries_before: frozenset[str] | None = None

    @staticmethod
    def check_free(run_dir: Path) -> None:
        """Raise ``RunInUse`` if a live process holds the run's lock; takes and writes nothing.

        For a check before Hydra writes into the run directory; ``RunLock`` itself still decides.
        """
        if not (Path(run_dir) / LOCK_FILE).is_file():
            return
        with open(Path(run_dir) / LOCK_FILE) as file:
            try:  # a shared lock: refused while a trainer holds the exclusive one
                fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunInUse(run_dir, file) from None

    @classmethod
    def claim(cls, run_dir: Path) -> None:
        """Lock ``run_dir`` for a new run, before Hydra writes its config and log into it.

        :raises RunInUse: a live process trains there.
        :raises RunDirectoryTaken: it holds another run. Both before anything in the directory changes.
        """
        run_dir = Path(run_dir)
        cls.check_free(run_dir)
        check_no_run_in(run_dir)
        entries = frozenset(os.listdir(run_dir)) if run_dir.is_dir() else None
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = cls(run_dir)
        try:
            check_no_run_in(run_dir)  # again, under the lock: a start racing this one may have won it
        except RunDirectoryTaken:
            lock.file.close()
            raise
        lock.entries_before = entries
        cls.claimed[run_dir.resolve()] = lock

    @classmethod
    def take(cls, run_dir: Path) -> RunLock:
        """The lock this process claimed on ``run_dir``, or a new one (a resumed run, a sweep's job)."""
        return cls.claimed.pop(Path(run_dir).resolve(), None) or cls(run_dir)

    def undo_start(self, run_dir: Path) -> None:
        """Remove what a start that failed before training wrote into ``run_dir``: the directory itself if the
        start made it, else the entries that were not there before (an existing directory is left as it was)."""
        self.file.close()
        if self.entries_before is None:
            shutil.rmtree(run_dir, ignore_errors=True)
            return
        for name in set(os.listdir(run_dir)) - self.entries_before:
            path = Path(run_dir) / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.file.close()  # closing drops the flock


def read_json(path: Path) -> Any:
    """A JSON file's contents; a truncated or corrupt file is a ValueError that names it."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error.msg}, line {error.lineno}); restore it, or delete it to start it anew."
        ) from None


def read_yaml(path: Path) -> Any:
    """A YAML file (a run's ``.hydra/`` config) as an OmegaConf node; a corrupt one is a ValueError that names it."""
    try:
        return OmegaConf.load(path)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not valid YAML ({type(error).__name__}); restore it (Hydra wrote it when the run started)."
        ) from None


def read_state(checkpoint: Path) -> dict[str, Any]:
    return read_json(Path(checkpoint) / STATE_FILE)
