"""Command line of the pipeline: ``python -m pipeline <command> --help`` explains each command.

Exit codes: 0 success; 1 the command ran but found a problem (bad records skipped, a check failed);
2 bad usage or unreadable input (a flag, a file); 3 a service could not be reached or started.

The package: ``parser`` builds the argument parser (one small builder per command), the
``commands_*`` modules hold the command bodies, ``common`` the exit codes and the settings a command
sees, ``options`` the flag groups several commands share. ``main`` is the entry point
(``python -m pipeline``, the ``distill-guard`` script).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipeline.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_SERVICE, EXIT_USAGE, CommandError
from pipeline.cli.parser import build_parser

__all__ = ["EXIT_OK", "EXIT_PROBLEM", "EXIT_SERVICE", "EXIT_USAGE", "CommandError", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
