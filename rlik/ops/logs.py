"""The lines the commands write for the user: bad input as one ``error:`` line; train.py's lines on the console
(above SB3's progress bar while one is drawn; in a joblib sweep, after the job's number and swept values) and in the
run directory's ``train.log``.

Hydra configures Python logging in every job, sweep jobs in their own processes included, from
``conf/hydra/job_logging/rlik.yaml``: the root logger goes to a ``ConsoleHandler`` and to ``<run dir>/train.log``
(appended to by a resume). ``say`` is the one way train.py writes such a line.
"""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

from tqdm import tqdm

LOGGER = logging.getLogger("rlik")


def exit_bad_input(problem: str) -> NoReturn:
    """Print ``error: <problem>`` on stderr and exit 2, the exit status of every bad input."""
    print(f"error: {problem}", file=sys.stderr, flush=True)
    sys.exit(2)


def say(line: str) -> None:
    """One line (or a block of lines) for the user: printed, and kept with a time stamp in train.log."""
    LOGGER.info(line)


class ConsoleHandler(logging.Handler):
    """Writes each record to the process's stdout as it is at that moment, through ``tqdm.write``.

    Not ``logging.StreamHandler``, which binds the stream once: SB3's rich progress bar replaces ``sys.stdout`` while
    it is drawn, to print lines above itself, and wandb wraps it to capture the console.

    ``prefix`` goes before every line: a sweep job's ``[job N key=value ...] `` (``set_console_prefix``).
    """

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.prefix = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            tqdm.write("\n".join(self.prefix + line for line in text.splitlines()), file=sys.stdout)
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


def job_prefix(number: int, swept: dict[str, object]) -> str:
    """``[job 3 algo.learning_rate=0.001 seed=1] ``: which sweep job a line comes from, when jobs run side by side."""
    return "[" + " ".join([f"job {number}", *(f"{key}={value}" for key, value in swept.items())]) + "] "


def set_console_prefix(prefix: str) -> None:
    """Start every console line of this process with ``prefix`` (train.log, one per job, stays without)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ConsoleHandler):
            handler.prefix = prefix
