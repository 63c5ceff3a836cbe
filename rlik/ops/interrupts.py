"""SIGINT (Ctrl-C), SIGTERM, SIGHUP (the terminal closed) and a SLURM job's pre-timeout signal: stop training at
the current step.

While ``learn()`` runs, the first signal only sets a flag, and says so; ``StopOnSignal`` ends ``learn()`` at the
next env step and the trainer then saves a checkpoint there. Anywhere else (start-up, the final evaluation) the
first signal raises ``Interrupted`` at once: nothing half-done is worth waiting for. A second signal while a
stop is under way is ignored, with a line saying so; a third raises ``Interrupted`` at once (a checkpoint being
written is then dropped whole, the newest complete one stays).
A signal another handler owned before (submitit's ``USR2``, which requeues the job) goes on to that handler
once the checkpoint is saved (``SignalStop.stop_then``, ``SignalStop.hand_over``).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
Handler = Callable[[int, FrameType | None], Any]


class Interrupted(BaseException):
    """A stop by signal, with the checkpoint saved at the stop if any. A BaseException, like
    KeyboardInterrupt: no ``except Exception`` swallows it."""

    def __init__(self, signum: int, checkpoint: Path | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.checkpoint = signum, checkpoint

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class SignalStop:
    """The process's signal handler; ``deferring`` while training can stop at a step boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the signal that asked training to stop
        self.repeats = 0  # signals received since, while the stop's checkpoint is saved
        self.forced: int | None = None  # the signal that then forced the exit (raised, possibly inside C code)
        self.deferring = False
        self.followers: dict[int, Handler] = {}  # signal -> the handler it goes on to after the stop

    def install(self) -> None:
        """Handle SIGINT, SIGTERM and SIGHUP (``python train.py``, ``python evaluate.py``)."""
        for signum in SIGNALS:
            signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Give the signals back to the system's default (end the process, quietly) for the exit: one that came
        while Python and wandb shut down would otherwise raise in an exit hook, with a traceback."""
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_DFL)

    def stop_then(self, signum: int, follower: Handler) -> None:
        """Handle ``signum`` too, then pass it on to ``follower`` (the handler it had: a submitit job's, which
        checkpoints the job's arguments and requeues it) once training has stopped and saved its checkpoint."""
        self.followers[signum] = follower
        signal.signal(signum, self._handle)

    def hand_over(self, signum: int) -> None:
        """Call the follower of ``signum``, if any (it may exit the process: submitit's does, after the requeue)."""
        if follower := self.followers.get(signum):
            follower(signum, None)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:  # a stop is under way: its checkpoint (or its clean-up) is worth the wait
            self.repeats += 1
            if self.repeats >= 2:
                self.forced = signum
                raise Interrupted(signum)
            say(f"{name} again: still stopping; a third signal stops at once (the newest complete checkpoint stays)")
            return
        self.signum = signum
        if self.deferring:
            say(f"{name}: stopping training at this step and saving a checkpoint there (a few seconds)")
            return
        raise Interrupted(signum)


def say(line: str) -> None:
    """One line on stderr from a signal handler: an ``os.write`` to the descriptor, since ``print`` would raise
    if the handler ran while the main code was printing (a buffered stream refuses a reentrant write)."""
    os.write(2, f"{line}\n".encode())


class StopOnSignal(BaseCallback):
    """Ends ``learn()`` at the first env step after a signal, leaving the model at a consistent step."""

    def __init__(self, stop: SignalStop) -> None:
        super().__init__()
        self.stop = stop

    def _on_training_start(self) -> None:
        self.stop.deferring = True

    def _on_training_end(self) -> None:
        self.stop.deferring = False

    def _on_step(self) -> bool:
        if self.stop.signum is None:
            return True
        # SB3 calls on_step after counting the env step but before storing its transition and next
        # observation; stopping there skips both, so count the step back: the model, its replay buffer
        # and its last observation then agree on the step a checkpoint records.
        self.model.num_timesteps -= self.training_env.num_envs
        return False


SIGNAL_STOP = SignalStop()  # the process's: train.py installs it, a submitit job adds its requeue signal
