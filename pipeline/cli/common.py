"""What every command shares: the exit codes, the user-facing error, and the settings a command sees."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from pipeline.settings import Settings

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_SERVICE = 0, 1, 2, 3


class CommandError(Exception):
    """A user-facing error: printed as ``error: <message>`` and exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings of the environment (``DG_*``) with the command's flags on top; invalid ones are a
    usage error that names each problem."""
    overrides: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            (f"{'.'.join(str(p) for p in e['loc'])}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise CommandError(f"invalid settings: {problems}") from exc


def topic_reader_error(exc: Exception) -> CommandError:
    """A topic reader's error as a command error: a broker that cannot be reached is a service error."""
    return CommandError(str(exc), EXIT_SERVICE if getattr(exc, "service", False) else EXIT_USAGE)
