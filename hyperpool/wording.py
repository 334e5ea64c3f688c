"""Counted nouns in messages people read: "1 task", "2 tasks", never "1 tasks"."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``count`` and ``noun``, in the plural (``many``, default noun + "s") unless 1."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"
