"""The worker's own exit codes (README, "Exit codes"), and ``fatal``: leave at once, committing nothing.

The codes are in the sysexits.h range, not with its meanings.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.logs import get_logger

log = get_logger("worker")

EXIT_OUTPUT_FAILED = 70  # a batch's outputs or state could not be written: exit without committing
EXIT_INVALID_FLOOD = 71  # too much recent input was invalid (DG_MAX_INVALID_RATIO)
EXIT_BROKER_GONE = 72  # no broker answered, or the login was refused, for DG_BROKER_TIMEOUT_S


def fatal(what: str, exc: BaseException | None, code: int = EXIT_OUTPUT_FAILED, **info: Any) -> None:
    """Log why, then exit the process with ``code`` at once.

    Leaving a batch any other way would let Faust ack its events: exiting without committing instead
    means a restarted worker processes the batch again (nothing accepted is lost)."""
    log.critical("fatal", what=what, error=None if exc is None else f"{type(exc).__name__}: {exc}", exc_info=exc,
                 hint="exiting without committing this batch's offsets; fix the cause, then restart the worker",
                 **info)
    os._exit(code)
