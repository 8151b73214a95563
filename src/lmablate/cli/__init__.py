"""The ``lmablate`` command line: subcommands mapped to functions, nothing else.

``parser`` declares the subcommands, ``commands`` holds one function per subcommand. A user
mistake (``LmablateError``) prints one clear message and exits with code 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from lmablate.cli.parser import build_parser
from lmablate.errors import LmablateError

__all__ = ["build_parser", "main"]


def _plain_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as a user reads it: its message, not the source line that raised it."""
    print(f"warning: {message}", file=file or sys.stderr)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a scheduler's stop) ends cleanly, like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _plain_warning
            return args.func(args)
    except LmablateError as exc:
        rank = os.environ.get("RANK", "0")  # under torchrun every process may say it
        print(f"error{'' if rank == '0' else f' (rank {rank})'}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
