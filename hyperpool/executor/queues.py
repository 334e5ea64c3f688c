"""Queue declarations, identical on every side.

RabbitMQ refuses to redeclare a queue with different arguments (PRECONDITION_FAILED closes
the channel), so the publisher, the workers and the local supervisor all build their queues
here. Pool queues are *quorum* queues: they count deliveries (``x-delivery-limit``), so a
poison message that kills its worker every time is dead-lettered after a bounded number of
attempts instead of blocking the queue forever; classic queues cannot count.
"""

from __future__ import annotations

from kombu import Connection, Exchange, Queue

TASK_EXCHANGE = Exchange("hyperpool", type="direct", durable=True)
DEAD_LETTER_EXCHANGE = Exchange("hyperpool.dlx", type="direct", durable=True)
DEAD_LETTER_SUFFIX = ".dead"


def dead_letter_queue_name(queue: str) -> str:
    return queue + DEAD_LETTER_SUFFIX


def task_queue(name: str, *, delivery_limit: int = 5) -> Queue:
    """The durable quorum queue a pool consumes, dead-lettering to ``<name>.dead``."""
    return Queue(
        name,
        exchange=TASK_EXCHANGE,
        routing_key=name,
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
            "x-dead-letter-routing-key": name,
        },
    )


def dead_letter_queue(name: str) -> Queue:
    """Where ``name``'s poison and malformed messages end up (kept for inspection)."""
    return Queue(
        dead_letter_queue_name(name),
        exchange=DEAD_LETTER_EXCHANGE,
        routing_key=name,
        durable=True,
    )


def declare_pool_queues(conn: Connection, name: str, *, delivery_limit: int = 5) -> None:
    """Declare a pool's queue and its dead-letter queue (idempotent)."""
    channel = conn.default_channel
    for queue in (dead_letter_queue(name), task_queue(name, delivery_limit=delivery_limit)):
        queue.bind(channel).declare()
