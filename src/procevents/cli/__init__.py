"""The command line: ``main`` and the subcommands, one module each, found
by name and imported only when that command runs (as pip's commands_dict),
so that ``procevents --help`` imports argparse and little else.

Each command module has ``build_parser()`` and ``run(args) -> int``;
shared options live in :mod:`.options`, the main loop in :mod:`.runner`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from .options import PROG, RuntimeFailure, UsageError

__all__ = ["COMMANDS", "PROG", "main"]

#: subcommand -> module (``watch`` is what runs without a subcommand).
COMMANDS: dict[str, str] = {
    "trace": "trace",
    "record": "record",
    "query": "query",
    "replay": "replay",
    "top": "top",
    "collect": "collect",
}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    name = args_list[0] if args_list and args_list[0] in COMMANDS else None
    command = importlib.import_module(f".{COMMANDS[name] if name else 'watch'}", __name__)
    try:
        status: int = command.run(command.build_parser().parse_args(args_list[1:] if name else args_list))
    except UsageError as exc:
        from .runner import stderr

        stderr(f"error: {exc}")
        return 2
    except RuntimeFailure as exc:
        from .runner import stderr

        stderr(f"error: {exc}")
        return 1
    return status
