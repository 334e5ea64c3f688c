"""Publisher confirms against the real broker: a message the broker refuses (nack) raises,
and the connection, which is in step, stays for the next publish."""

from __future__ import annotations

import amqp
import pytest

from hyperpool.executor.publisher import Publisher, PublishNacked
from hyperpool.executor.queues import TASK_EXCHANGE
from hyperpool.models import TaskMessage
from tests.conftest import queue_info


def _message(task_id: str) -> TaskMessage:
    return TaskMessage(taskId=task_id, name="mAdd", executable="true", args=[])


def test_a_refused_message_raises_and_the_connection_stays(settings, namespace):
    queue = f"{namespace}.full"
    # A queue that refuses every message (a classic one: RabbitMQ 3.10's quorum queues
    # confirmed publishes beyond x-max-length with reject-publish, measured)
    with amqp.Connection("127.0.0.1:5672") as conn:
        channel = conn.channel()
        channel.exchange_declare(TASK_EXCHANGE.name, "direct", durable=True, auto_delete=False)
        channel.queue_declare(queue, durable=True, auto_delete=False, arguments={
            "x-max-length": 0, "x-overflow": "reject-publish"})
        channel.queue_bind(queue, TASK_EXCHANGE.name, routing_key=queue)
    publisher = Publisher(settings)
    publisher._declared.add(queue)  # declared above, with other arguments on purpose
    try:
        publisher.publish(f"{namespace}.mAdd", _message("before"), reply_to="stream")
        conn = publisher._conn
        with pytest.raises(PublishNacked, match="refused 2 task message"):
            publisher.publish_many([(queue, _message(f"t{i}"), 1) for i in range(2)],
                                   reply_to="stream")
        assert publisher._conn is conn
        publisher.publish(f"{namespace}.mAdd", _message("after"), reply_to="stream")
        assert publisher._conn is conn and queue_info(f"{namespace}.mAdd") is not None
    finally:
        publisher.close()
