"""Unacknowledged counts for the local autoscaler, from the machine's real RabbitMQ.

The point of reading them from the Prometheus endpoint is freshness: an acknowledgement must
show within about a second (the management API took 5 s), or a finished pool scales to zero
that much after its cooldown.
"""

from __future__ import annotations

import dataclasses
import time

from kombu import Consumer

from hyperpool.executor.queues import declare_pool_queues, task_queue
from hyperpool.local.probe import QueueProbe
from hyperpool.local.queue_metrics import QueueMetrics
from hyperpool.services import broker_connection
from tests.conftest import wait_for


def _held_message(settings, queue):
    """Publish one message to ``queue`` and take it without acknowledging it yet."""
    conn = broker_connection(settings)
    declare_pool_queues(conn, queue, delivery_limit=settings.delivery_limit)
    channel = conn.channel()
    conn.Producer(channel).publish({"x": 1}, routing_key=queue, exchange="")
    held = []
    consumer = Consumer(channel, [task_queue(queue, delivery_limit=settings.delivery_limit)],
                        callbacks=[lambda body, message: held.append(message)],
                        prefetch_count=1)
    consumer.consume()
    conn.drain_events(timeout=5)
    assert len(held) == 1
    return conn, consumer, held[0]


def test_unacked_counts_are_fresh_within_a_second(settings, namespace):
    queue = f"{namespace}.fresh"
    conn, consumer, message = _held_message(settings, queue)
    metrics = QueueMetrics(settings)
    try:
        started = time.monotonic()
        wait_for(lambda: metrics.unacked().get(queue) == 1, timeout=10, what="unacked 1")
        shown = time.monotonic() - started
        message.ack()
        started = time.monotonic()
        wait_for(lambda: metrics.unacked().get(queue) == 0, timeout=10, what="unacked 0")
        cleared = time.monotonic() - started
    finally:
        consumer.cancel()
        conn.release()
    # services.sh sets quorum_tick_interval to 500 ms (RabbitMQ's default 5 s would fail this).
    assert shown < 1.5 and cleared < 1.5, (shown, cleared)


def test_probe_counts_unacked_and_falls_back_to_the_management_api(settings, namespace):
    queue = f"{namespace}.probe"
    conn, consumer, message = _held_message(settings, queue)
    closed = dataclasses.replace(settings, rabbitmq_metrics_url="http://127.0.0.1:9")
    try:
        fresh = QueueProbe(settings, [queue], management_every=0)
        wait_for(lambda: fresh.sample()[queue].unacked == 1, timeout=10, what="probe unacked")
        depth = fresh.sample()[queue]
        assert (depth.ready, depth.unacked, depth.consumers) == (0, 1, 1)
        assert fresh._metrics_retry_at == float("-inf"), "read from the Prometheus endpoint"

        # Endpoint unreachable: the management API answers (later, but it answers).
        fallback = QueueProbe(closed, [queue], management_every=0)
        wait_for(lambda: fallback.sample()[queue].unacked == 1, timeout=15,
                 what="unacked via the management API")
        assert fallback._metrics_retry_at > time.monotonic(), "endpoint not retried every tick"
        fresh.close()
        fallback.close()
    finally:
        message.ack()
        consumer.cancel()
        conn.release()
