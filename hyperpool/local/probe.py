"""Queue depth for scaling: ready messages now, unacknowledged ones from the management API.

The scaling signal is ready + unacknowledged messages (busy workers hold unacknowledged ones, so
ready alone would shrink a pool that is fully busy). The management API reports both, but as
statistics refreshed every ``collect_statistics_interval`` — 5 s by default; measured here, a
message published to an idle queue first shows up 4.9 s later. Scaling from zero in under a
second cannot wait for that, so the probe combines two sources:

* **ready** and **consumers** from a passive ``queue.declare`` on one AMQP channel: the
  queue's own count at this instant, ~0.1 ms per queue;
* **unacknowledged** from one ``GET /api/queues`` for all pools, at most once a second (it only
  changes as fast as tasks start and finish, and it is only needed to keep busy pools alive).

The probe also declares every pool's queue up front (same arguments as publisher and workers),
so a passive declare never meets a missing queue and publishers can find it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

from kombu import Connection

from hyperpool.errors import HyperpoolError
from hyperpool.executor.queues import declare_pool_queues
from hyperpool.local.management import ManagementApi, QueueDepth, QueueStats
from hyperpool.services import broker_connection, check_broker
from hyperpool.settings import Settings, mask_url

log = logging.getLogger("hyperpool.local")
MANAGEMENT_EVERY = 1.0



class QueueProbe:
    """Measures the queues of a set of pools; ``None`` for a queue it could not measure."""

    def __init__(self, settings: Settings, queues: Sequence[str], *,
                 management_every: float = MANAGEMENT_EVERY):
        self.settings = settings
        self.queues = list(queues)
        self.management = ManagementApi(settings, timeout=min(settings.connect_timeout, 2.0))
        self.management_every = management_every
        self._conn: Connection | None = None
        self._channel = None
        self._stats: dict[str, QueueStats] = {}
        self._stats_at = float("-inf")
        self._warned: set[str] = set()

    # -- AMQP ---------------------------------------------------------------------------
    def _connect(self):
        if self._channel is None:
            conn = broker_connection(self.settings)
            conn.ensure_connection(max_retries=1, timeout=self.settings.connect_timeout)
            for queue in self.queues:
                declare_pool_queues(conn, queue, delivery_limit=self.settings.delivery_limit)
            self._conn, self._channel = conn, conn.channel()
        return self._channel

    def _reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # the connection is already broken
                self._conn.release()
        self._conn = self._channel = None

    def declare(self) -> None:
        """Connect and declare every pool queue; :class:`ServiceUnavailable` if RabbitMQ is down."""
        check_broker(self.settings)
        self._connect()

    def _ready_now(self) -> dict[str, tuple[int, int]]:
        try:
            channel = self._connect()
            counts = {}
            for queue in self.queues:
                ok = channel.queue_declare(queue=queue, passive=True)
                counts[queue] = (int(ok.message_count), int(ok.consumer_count))
            self._warned.discard("amqp")
            return counts
        except Exception as exc:  # noqa: BLE001 - any transport error: retry next tick
            self._reset()
            self._warn("amqp", "cannot measure queues on RabbitMQ at %s: %s: %s",
                       mask_url(self.settings.broker_url), type(exc).__name__, exc)
            return {}

    # -- management API -----------------------------------------------------------------
    def _refresh_stats(self, now: float) -> None:
        if now - self._stats_at < self.management_every:
            return
        self._stats_at = now
        try:
            self._stats = self.management.queues()
            self._warned.discard("management")
        except HyperpoolError as exc:
            self._stats = {}
            self._warn("management", "%s; unacknowledged messages are not counted (busy "
                       "workers may be asked to stop early; they still finish their task)", exc)

    def _warn(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def sample(self) -> dict[str, QueueDepth | None]:
        """Depth of every pool queue; ``None`` where the broker could not be asked."""
        self._refresh_stats(time.monotonic())
        ready = self._ready_now()
        result: dict[str, QueueDepth | None] = {}
        for queue in self.queues:
            if queue not in ready:
                result[queue] = None
                continue
            ready_now, consumers = ready[queue]
            stats = self._stats.get(queue)
            result[queue] = QueueDepth(ready=ready_now, unacked=stats.unacked if stats else 0,
                                       consumers=consumers)
        return result

    def close(self) -> None:
        self._reset()
