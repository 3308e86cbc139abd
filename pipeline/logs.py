"""Structured logging: JSON lines by default, readable key=value output on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_JSON = [True]  # the format ``configure`` chose, for ``stdlib_formatter``


def _renderer(json: bool) -> structlog.types.Processor:
    return structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=True)


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog once per process. ``json=None`` picks JSON unless stderr is a terminal."""
    if json is None:
        json = not sys.stderr.isatty()
    _JSON[0] = json
    lvl = getattr(logging, level.upper(), logging.INFO)
    renderer = _renderer(json)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def stdlib_formatter() -> structlog.stdlib.ProcessorFormatter:
    """A stdlib ``logging`` formatter that renders what libraries log (Faust, mode, aiokafka,
    kafka-python) as structlog renders our own lines: JSON by default, each with ``event`` (the message),
    ``level``, ``logger`` and ``timestamp``."""
    return structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(_JSON[0])],
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.processors.TimeStamper(fmt="iso", utc=True),
                           structlog.processors.format_exc_info],
    )


def faust_logging_config() -> dict[str, Any]:
    """Faust's ``logging_config``: mode's handlers kept, their formatters (``default`` for a log file,
    ``colored`` for a stream) replaced by :func:`stdlib_formatter`, so one format covers the worker's log
    from its first line (Faust's start-up banner is printed, not logged, and stays as it is)."""
    spec = {"()": stdlib_formatter}
    return {"merge": True, "formatters": {"default": spec, "colored": spec}}


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger bound with the component name."""
    return structlog.get_logger(component=name)
