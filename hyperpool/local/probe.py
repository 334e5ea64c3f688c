"""Queue depth for scaling: ready messages now, unacknowledged ones from RabbitMQ's metrics.

The scaling signal is ready + unacknowledged messages (busy workers hold unacknowledged ones, so
ready alone would shrink a pool that is fully busy). The management API reports both, but as
statistics refreshed every ``collect_statistics_interval`` — 5 s by default; measured here, a
message published to an idle queue first shows up 4.9 s later. Scaling from zero in under a
second cannot wait for that, so the probe combines two sources:

* **ready** and **consumers** from a passive ``queue.declare`` on one AMQP channel: the
  queue's own count at this instant, ~0.1 ms per queue;
* **unacknowledged** twice a second from one request for all pools: RabbitMQ's Prometheus
  endpoint (fresh within 0.5 s, see :mod:`hyperpool.local.queue_metrics`), or the management
  API where that endpoint is not enabled or does not list a pool's queue (a scale-to-zero
  then comes up to 5 s after the cooldown).

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
from hyperpool.local.management import ManagementApi, QueueDepth
from hyperpool.local.queue_metrics import QueueMetrics
from hyperpool.services import broker_connection, check_broker
from hyperpool.settings import Settings, mask_url

log = logging.getLogger("hyperpool.local")
MANAGEMENT_EVERY = 0.5
METRICS_RETRY_SECONDS = 30.0



class QueueProbe:
    """Measures the queues of a set of pools; ``None`` for a queue it could not measure."""

    def __init__(self, settings: Settings, queues: Sequence[str], *,
                 management_every: float = MANAGEMENT_EVERY):
        self.settings = settings
        self.queues = list(queues)
        self.management = ManagementApi(settings, timeout=min(settings.connect_timeout, 2.0))
        self.metrics = QueueMetrics(settings, timeout=min(settings.connect_timeout, 2.0))
        self._metrics_retry_at = float("-inf")
        self.management_every = management_every
        self._conn: Connection | None = None
        self._channel = None
        self._unacked: dict[str, int] = {}
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
        if now >= self._metrics_retry_at:
            try:
                unacked = self.metrics.unacked()
                if all(q in unacked for q in self.queues):
                    self._unacked = unacked
                    return
            except HyperpoolError as exc:
                self._warn("metrics", "%s; reading the management API instead (its counts "
                           "lag up to 5 s, so pools reach zero later)", exc)
                # Not enabled or unreachable: do not pay a failed request on every tick.
                self._metrics_retry_at = now + METRICS_RETRY_SECONDS
        try:
            self._unacked = {name: q.unacked for name, q in self.management.queues().items()}
            self._warned.discard("management")
        except HyperpoolError as exc:
            self._unacked = {}
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
            result[queue] = QueueDepth(ready=ready_now, unacked=self._unacked.get(queue, 0),
                                       consumers=consumers)
        return result

    def close(self) -> None:
        self._reset()
