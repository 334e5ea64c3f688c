"""Unacknowledged counts from RabbitMQ's Prometheus endpoint: fresh within a queue tick.

The management API's numbers pass through its statistics collector, which reads
``collect_statistics_interval`` once when it starts (5 s unless set before the broker
started): measured here, an acknowledgement showed in the management API 5.0 s late even
after setting 1 s at run time, so a finished pool looked busy for 5 s more and scaled to
zero that much after its cooldown. ``/metrics/detailed?family=queue_coarse_metrics`` reads
the queues' own counters instead, which a quorum queue refreshes every
``quorum_tick_interval`` (configs/services.sh sets 500 ms; RabbitMQ's default is 5 s):
measured here, the same acknowledgement showed 0.49 s later.
"""

from __future__ import annotations

import urllib.parse

from hyperpool.errors import ServiceUnavailable
from hyperpool.local.management import read_endpoint, vhost_of
from hyperpool.settings import Settings, mask_url

UNACKED = "rabbitmq_detailed_queue_messages_unacked"


class QueueMetrics:
    """Reads ``rabbitmq_detailed_queue_messages_unacked`` for one vhost (one request)."""

    def __init__(self, settings: Settings, *, timeout: float | None = None):
        self.base = settings.rabbitmq_metrics_url.rstrip("/")
        vhost = urllib.parse.quote(vhost_of(settings.broker_url), safe="")
        self.url = f"{self.base}/metrics/detailed?vhost={vhost}&family=queue_coarse_metrics"
        self.timeout = timeout if timeout is not None else settings.connect_timeout

    def unacked(self) -> dict[str, int]:
        """Unacknowledged messages by queue name; :class:`ServiceUnavailable` if unreadable."""
        body = read_endpoint(self.url, timeout=self.timeout, what="RabbitMQ Prometheus endpoint",
                             base=self.base, plugin="rabbitmq_prometheus")
        text = (body or b"").decode("utf-8", "replace")
        # Imported here, not at the top: prometheus-client chooses its value storage on first
        # import, and the supervisor must set PROMETHEUS_MULTIPROC_DIR before that.
        from prometheus_client.parser import text_string_to_metric_families

        out: dict[str, int] = {}
        try:
            for family in text_string_to_metric_families(text):
                if family.name != UNACKED:
                    continue
                for sample in family.samples:
                    queue = sample.labels.get("queue")
                    if queue is not None:
                        out[queue] = int(sample.value)
        except ValueError as exc:
            raise ServiceUnavailable(
                f"unreadable answer from {mask_url(self.base)}: {exc}") from None
        return out
