"""What the methods, models and datasets registries share: a name → entry table with one error
wording for an unknown or doubly registered name, and declarative keyword options (a default, a
validity check, what is allowed in words)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Option", "Registry", "describe_options", "is_bool", "is_int"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries (``casefold``: names are case-insensitive, kept lower-case).

    ``duplicate`` and ``unknown`` are the error messages, formatted with ``name`` (and, for
    ``unknown``, ``names``: the registered names, comma-separated). ``same_again``: registering the
    very same entry under its name again is allowed (a module imported twice).
    """

    def __init__(self, *, duplicate: str, unknown: str, casefold: bool = False, same_again: bool = False) -> None:
        self.entries: dict[str, T] = {}
        self._duplicate, self._unknown = duplicate, unknown
        self._casefold, self._same_again = casefold, same_again

    def _key(self, name: Any) -> Any:
        return name.lower() if self._casefold and isinstance(name, str) else name

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a name taken by another entry raises ValueError."""
        key = self._key(name)
        if key in self.entries and not (self._same_again and self.entries[key] is entry):
            raise ValueError(self._duplicate.format(name=name))
        self.entries[key] = entry
        return entry

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self.entries)

    def __contains__(self, name: Any) -> bool:
        return isinstance(name, str) and self._key(name) in self.entries

    def __iter__(self) -> Iterator[T]:
        return (self.entries[key] for key in self.names())

    def get(self, name: Any) -> T:
        """The entry of ``name``; an unknown name raises ValueError listing the registered ones."""
        if name not in self:
            raise ValueError(self._unknown.format(name=name, names=", ".join(self.names())))
        return self.entries[self._key(name)]


@dataclass(frozen=True)
class Option:
    """One keyword option of a model or dataset: its default, a validity check and, in words, what
    is allowed."""

    default: Any
    check: Callable[[Any], bool]
    allowed: str
    doc: str = ""


def describe_options(options: dict[str, Option]) -> str:
    """``name (allowed; default d); ...`` for error messages, or ``(none)``."""
    if not options:
        return "(none)"
    return "; ".join(f"{k} ({o.allowed}; default {o.default!r})" for k, o in options.items())


def is_int(low: int | None = None, high: int | None = None) -> Callable[[Any], bool]:
    """A real int (bools excluded) within ``[low, high]``."""

    def check(v: Any) -> bool:
        return (
            isinstance(v, int) and not isinstance(v, bool)
            and (low is None or v >= low) and (high is None or v <= high)
        )

    return check


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)
