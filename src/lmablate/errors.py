"""User-facing errors.

A ``LmablateError`` is a mistake the user can fix (a config field, a missing file, a corpus too
small): the CLI prints its message without a traceback and exits with code 2. Anything else that
escapes is a bug in lmablate and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LmablateError(Exception):
    """A problem with the user's input; the message says what is wrong and what is valid."""


class ConfigError(LmablateError):
    """An invalid configuration file, field or override."""


class DataError(LmablateError):
    """A corpus or tokenizer that cannot be loaded or is unusable for training."""


def suggest(key: str, valid: Iterable[str]) -> str:
    """ "; did you mean 'x'?" for the closest valid name, or "" when none is close."""
    close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
