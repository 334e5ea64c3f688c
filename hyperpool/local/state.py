"""Where a running supervisor leaves its state for ``hyperpool status`` (another process).

Redis, because every hyperpool process already needs it and it is reachable from every
container of the compose file (a file under ``/tmp`` would not be). Each supervisor owns one
key, ``hyperpool:local:supervisor:<host>:<pid>:<token>``, holding its latest snapshot as JSON
with a short TTL that every write renews: a supervisor that was killed disappears from
``status`` within seconds, with no clean-up needed. A clean exit deletes its key at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import time
from typing import Any

import psutil
import redis

log = logging.getLogger("hyperpool.local")

KEY_PREFIX = "hyperpool:local:supervisor:"
TTL_SECONDS = 10
WRITE_EVERY = 0.5


def supervisor_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class StatePublisher:
    """A supervisor listener that writes its snapshot to Redis (at most every 0.5 s)."""

    def __init__(self, client: redis.Redis, ident: str | None = None, *,
                 ttl: int = TTL_SECONDS, every: float = WRITE_EVERY):
        self.client = client
        self.ident = ident or supervisor_id()
        self.key = KEY_PREFIX + self.ident
        self.ttl = ttl
        self.every = every
        self._last = float("-inf")
        self._failing = False

    def __call__(self, snapshot: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        host, pid, _token = self.ident.rsplit(":", 2)
        data = {"id": self.ident, "host": host, "pid": int(pid), **snapshot}
        try:
            self.client.set(self.key, json.dumps(data), ex=self.ttl)
            if self._failing:
                log.info("pool state is written to Redis again")
            self._failing = False
        except (redis.RedisError, OSError) as exc:
            if not self._failing:
                log.warning("cannot write pool state to Redis (status will not show these "
                            "pools): %s", exc)
            self._failing = True

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            self.client.delete(self.key)


def _dead_here(state: dict[str, Any]) -> bool:
    """A supervisor of this host whose process is gone (killed before its key expired)."""
    if state.get("host") != socket.gethostname():
        return False
    pid = state.get("pid")
    return isinstance(pid, int) and not psutil.pid_exists(pid)


def read_states(client: redis.Redis) -> list[dict[str, Any]]:
    """Snapshots of every live supervisor (oldest first).

    A key outlives a SIGKILLed supervisor by up to its TTL; on the same host its PID tells, and
    the key is removed at once (``hyperpool run`` right after a kill must not leave its queues
    to a dead supervisor).
    """
    states = []
    for key in client.scan_iter(match=KEY_PREFIX + "*", count=100):
        raw = client.get(key)
        if raw is None:
            continue
        try:
            state = json.loads(raw)
        except ValueError:
            continue
        if _dead_here(state):
            client.delete(key)
            continue
        states.append(state)
    return sorted(states, key=lambda s: s.get("started", 0))


def served_queues(client: redis.Redis) -> dict[str, str]:
    """Queue -> id of the live supervisor that scales it."""
    return {pool["queue"]: state["id"] for state in read_states(client)
            for pool in state.get("pools", [])}
