"""The one exception type for bad input that a user can fix.

Commands in `cli/` print a `DataError` as a one-line message (no traceback) and exit
non-zero; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class DataError(ValueError):
    """Malformed or inconsistent input: the message names the file, line or id."""
