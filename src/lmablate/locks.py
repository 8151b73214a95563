"""One writer per directory, and only in a directory of its own kind.

``lmablate run`` locks the study directory and ``lmablate train`` the run directory, so a
second process on the same directory stops at once with a clear message instead of
interleaving writes. The lock is ``flock`` on ``DIR/.lock``: the operating system releases it
when the holder exits, however it exits (a killed process never leaves a stale lock).

Before it writes anything there, a command claims its folder: a new or empty one, or one that
an earlier command of the same kind marked (``DIR/.lmablate`` names the kind: ``run``,
``study`` or ``export``). A folder written before that marker existed is accepted when every
name in it is one its kind writes. Anything else (a study folder given to ``train``, a run
folder given to ``run``, a folder of the user's own files) is refused before a byte changes
there.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from lmablate.errors import LmablateError

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None  # type: ignore[assignment]


MARKER = ".lmablate"
# what a folder is claimed for -> the folder's kind
KINDS = {"training": "run", "study": "study", "export": "export"}
# every name a folder of each kind holds, as versions before the marker wrote them
LEGACY = {
    "run": {
        "config.json",
        "summary.json",
        "metrics.jsonl",
        "eval_documents.json",
        "samples.json",
        "checkpoint",
        "tokenizer",
        "train.log",
        "tensorboard",
        "wandb",
        "eval",
    },
    "study": {"study.yaml", "runs", "report", "sample_prompts.json"},
    "export": {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "README.md",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    },
}
ANCHOR = {"run": "config.json", "study": "study.yaml", "export": "model.safetensors"}
IGNORED = {".lock", ".DS_Store"}
HINT = {
    "run": "train into a new or empty --out folder",
    "study": "run the study into a new or empty --out folder",
    "export": "export into a new or empty folder",
}


def folder_kind(directory: Path) -> str | None:
    """``run``, ``study`` or ``export`` for a folder lmablate wrote (by its marker, else by
    its names), ``""`` for a missing or empty one, None for a folder of anything else."""
    if not directory.is_dir():
        return ""
    marker = directory / MARKER
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text()).get("kind")
        except (ValueError, AttributeError, OSError):
            kind = None
        return kind if kind in LEGACY else None
    names = {p.name for p in directory.iterdir()} - IGNORED
    if not names:
        return ""
    for kind, known in LEGACY.items():
        if ANCHOR[kind] in names and names <= known:
            return kind
    return None


def check_claim(directory: Path, what: str) -> None:
    """Refuse ``directory`` unless it is missing, empty or of the kind ``what`` writes."""
    if directory.exists() and not directory.is_dir():
        raise LmablateError(f"{directory} is a file, not a directory; give a directory (--out)")
    for parent in directory.parents:
        if parent.exists() and not parent.is_dir():
            raise LmablateError(f"{parent} is a file, so {directory} cannot be created in it")
    want = KINDS[what]
    found = folder_kind(directory)
    if found in ("", want):
        return
    if found is not None:
        raise LmablateError(
            f"{directory} is an lmablate {found} folder, not {'an' if want[0] in 'aeiou' else 'a'} "
            f"{want} folder; {HINT[want]} "
            "(nothing was written there)"
        )
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir())
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    raise LmablateError(
        f"{directory} already holds files lmablate did not write ({shown}); {HINT[want]}, so "
        "nothing there is overwritten"
    )


def claim(directory: Path, what: str) -> None:
    """Check the claim, create the folder and mark it as of the kind ``what`` writes."""
    check_claim(directory, what)
    marker = directory / MARKER
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not marker.is_file():
            marker.write_text(json.dumps({"kind": KINDS[what]}) + "\n")
    except OSError as exc:
        raise LmablateError(
            f"cannot create {directory}: {exc.strerror or exc}; give a folder this user may "
            "write (nothing was written)"
        ) from None


@contextlib.contextmanager
def exclusive(directory: Path, what: str) -> Iterator[None]:
    claim(directory, what)
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
