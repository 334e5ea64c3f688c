"""Names that cross a boundary and must stay valid there: task files and broker queues.

A file name a task writes must stay inside its work dir (a pool worker shares it with every
other task); a queue name must fit AMQP's short string, which kombu/py-amqp otherwise reject
mid-run with ``struct.error: ubyte format requires 0 <= number <= 255``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

QUEUE_NAME_BYTES = 255  # AMQP 0-9-1 shortstr; RabbitMQ's limit for queue names


def file_name(item: Any) -> str:
    """HyperFlow lists files as names or as ``{"name": ...}`` objects."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return item["name"]
    raise ValueError(f"expected a file name or an object with a 'name', got {item!r}")


def ensure_relative_inside(name: str) -> str:
    """Reject a file name that could escape the task's work dir (absolute or with ``..``)."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid file name {name!r}")
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise ValueError(f"file name {name!r} must be relative to the work dir without '..'")
    return name


def ensure_queue_name(name: str) -> str:
    """Reject a queue name RabbitMQ cannot take (over 255 bytes in UTF-8)."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > QUEUE_NAME_BYTES:
        raise ValueError(f"queue name {name[:40]!r}... is {size} bytes long; RabbitMQ allows "
                         f"at most {QUEUE_NAME_BYTES}: shorten the task type or the queue name")
    return name
