"""Taking a stopped run's queued task messages back out of the pool queues.

A cancelled or failed run marks itself cancelled in Redis, so a worker skips its messages;
but when no worker is left (the run's own local pools have just stopped), those messages
would stay ready in the queue for good: ``status`` showed 32 of them in ``default.mProjectPP``
after one Ctrl-C. Queues are shared by every run of a namespace and AMQP cannot delete
selected messages, so each queue is read once through (``basic.get``, up to the depth it had
when the withdrawal began): this run's messages are acknowledged, which removes them, and any
other run's message is published again, confirmed, before its original is acknowledged, so
it is never lost (it moves to the back of the queue; a fresh copy, so its delivery count does
not grow towards the dead-letter limit as a requeue's would).
"""

from __future__ import annotations

from collections.abc import Iterable

import amqp

from hyperpool.executor.queues import TASK_EXCHANGE
from hyperpool.services import broker_connection
from hyperpool.settings import Settings


def withdraw(settings: Settings, queues: Iterable[str], run_id: str) -> int:
    """Remove ``run_id``'s ready messages from ``queues``; return how many were removed."""
    prefix = f"{run_id}:"  # task ids are <run>:<process>:<firing>, Celery ids add #<attempt>
    removed = 0
    with broker_connection(settings) as conn:
        conn.ensure_connection(max_retries=1, timeout=settings.connect_timeout)
        channel: amqp.Channel = conn.connection.channel()
        channel.confirm_select()  # basic_publish then waits for the broker's confirm
        try:
            for queue in queues:
                _, depth, _ = channel.queue_declare(queue, passive=True)
                for _ in range(depth):
                    message = channel.basic_get(queue, no_ack=False)
                    if message is None:
                        break
                    task_id = str((message.headers or {}).get("id", ""))
                    if not task_id.startswith(prefix):
                        copy = amqp.Message(message.body, **message.properties)
                        channel.basic_publish(copy, exchange=TASK_EXCHANGE.name,
                                              routing_key=queue)
                    else:
                        removed += 1
                    channel.basic_ack(message.delivery_tag)
        finally:
            channel.close()
    return removed
