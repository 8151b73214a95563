"""One writer per directory: an advisory lock that dies with its process.

``lmablate run`` locks the study directory and ``lmablate train`` the run directory, so a
second process on the same directory stops at once with a clear message instead of
interleaving writes. The lock is ``flock`` on ``DIR/.lock``: the operating system releases it
when the holder exits, however it exits (a killed process never leaves a stale lock).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from lmablate.errors import LmablateError

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def exclusive(directory: Path, what: str) -> Iterator[None]:
    if directory.exists() and not directory.is_dir():
        raise LmablateError(f"{directory} is a file, not a directory; give a directory (--out)")
    for parent in directory.parents:
        if parent.exists() and not parent.is_dir():
            raise LmablateError(f"{parent} is a file, so {directory} cannot be created in it")
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    path = directory / ".lock"
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LmablateError(
                f"{directory} is in use by {holder}; wait for it to finish or stop it, then run "
                f"this {what} again (it resumes where that one stopped)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"lmablate (pid {os.getpid()})")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
