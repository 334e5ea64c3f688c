"""Look-ahead demand in Redis: what the engines announce and the local supervisors read.

One hash, :data:`UPCOMING_KEY`, fields ``<queue> <run id>``, values ``<count> <unix time>``
(the engine's counter is :mod:`hyperpool.engine.upcoming`). A field older than
:data:`STALE_SECONDS` belongs to an engine that died: readers ignore and remove it. The engine
refreshes its fields while they are non-zero and deletes them when its run ends. It is a hint:
when Redis is away, pools scale on their queues alone.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable

import redis

UPCOMING_KEY = "hyperpool:upcoming"
STALE_SECONDS = 30.0
REFRESH_SECONDS = 5.0


class UpcomingPublisher:
    """Writes one run's counts to Redis when they change (and refreshes them while non-zero)."""

    def __init__(self, client: redis.Redis, run_id: str, *, on_change: Callable[[], None] | None
                 = None):
        self.client = client
        self.run_id = run_id
        self.on_change = on_change
        self._sent: dict[str, int] = {}
        self._sent_at = 0.0

    def publish(self, counts: Counter[str]) -> None:
        now = time.time()
        current = {q: n for q, n in counts.items() if n > 0 or q in self._sent}
        changed = {q: n for q, n in current.items() if self._sent.get(q) != n}
        if not changed and (not any(current.values()) or now - self._sent_at < REFRESH_SECONDS):
            return
        fields = {f"{q} {self.run_id}": f"{n} {now:.3f}" for q, n in current.items() if n > 0}
        gone = [f"{q} {self.run_id}" for q, n in current.items() if n <= 0]
        with contextlib.suppress(redis.RedisError, OSError):
            pipe = self.client.pipeline(transaction=False)
            if fields:
                pipe.hset(UPCOMING_KEY, mapping=fields)
            if gone:
                pipe.hdel(UPCOMING_KEY, *gone)
            pipe.execute()
            self._sent = {q: n for q, n in current.items() if n > 0}
            self._sent_at = now
        from hyperpool import metrics

        for queue, n in changed.items():
            metrics.UPCOMING.labels(queue).set(max(0, n))
        if changed and self.on_change is not None:
            self.on_change()

    def close(self) -> None:
        """The run ended: its upcoming work is gone."""
        with contextlib.suppress(redis.RedisError, OSError):
            if self._sent:
                self.client.hdel(UPCOMING_KEY, *(f"{q} {self.run_id}" for q in self._sent))
        self._sent = {}


class UpcomingReader:
    """A supervisor's view: the upcoming count per queue, summed over live runs."""

    def __init__(self, client: redis.Redis, queues: Iterable[str]):
        self.client = client
        self.queues = set(queues)

    def __call__(self) -> dict[str, int]:
        try:
            raw = self.client.hgetall(UPCOMING_KEY)
        except (redis.RedisError, OSError):
            return {}
        now, totals, stale = time.time(), Counter[str](), []
        for key, value in raw.items():
            try:
                queue = key.decode().rsplit(" ", 1)[0]
                count_text, at_text = value.decode().split()
                count, at = int(count_text), float(at_text)
            except (ValueError, UnicodeDecodeError):
                stale.append(key)
                continue
            if now - at > STALE_SECONDS:
                stale.append(key)
            elif queue in self.queues:
                totals[queue] += count
        if stale:
            with contextlib.suppress(redis.RedisError, OSError):
                self.client.hdel(UPCOMING_KEY, *stale)
        return dict(totals)
