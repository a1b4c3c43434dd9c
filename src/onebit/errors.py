"""The library's own error types.

Every error onebit raises on purpose derives from :class:`OnebitError`, so a program can catch all of
them with one ``except onebit.OnebitError``. Each concrete error also keeps the built-in type it had
before the common base existed (``ModelFileError`` is still a ``ValueError``, ``DatabaseError`` still a
``RuntimeError``), so existing ``except ValueError`` handlers keep working.

This module imports nothing from onebit: every layer (methods, nn, train, bench, deploy) may use it.
"""

from __future__ import annotations

__all__ = ["OnebitError", "UsageError"]


class OnebitError(Exception):
    """Base class of the errors onebit raises on purpose; the message names the problem and the fix."""


class UsageError(OnebitError, ValueError):
    """A command-line value (or a combination of them) is not allowed; the message says what is."""
