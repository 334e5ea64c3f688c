"""Ctrl-C while the engine publishes, against the real broker: the connection is dropped, not
closed politely (its byte stream may be out of step), and the next publish just works."""

from __future__ import annotations

import pytest

from hyperpool.executor.publisher import Publisher
from hyperpool.models import TaskMessage


def _message(task_id: str) -> TaskMessage:
    return TaskMessage(taskId=task_id, name="mAdd", executable="true", args=[])


def test_an_interrupted_publish_drops_the_connection_and_the_next_one_works(settings,
                                                                          namespace):
    queue = f"{namespace}.mAdd"
    publisher = Publisher(settings)
    try:
        publisher.publish(queue, _message("warm"), reply_to="stream")
        conn, channel = publisher._conn, publisher._channel
        calls: list[str] = []
        real_release, real_collect = conn.release, conn.collect
        conn.release = lambda: (calls.append("release"), real_release())
        conn.collect = lambda: (calls.append("collect"), real_collect())
        sent = 0

        def interrupted(*args, **kwargs):
            nonlocal sent
            sent += 1
            if sent == 2:
                raise KeyboardInterrupt
            return type(channel).basic_publish(channel, *args, **kwargs)

        channel.basic_publish = interrupted
        with pytest.raises(KeyboardInterrupt):
            publisher.publish_many([(queue, _message(f"t{i}"), 1) for i in range(3)],
                                   reply_to="stream")
        assert calls == ["collect"] and publisher._conn is None
        # publish() returns only once the broker confirmed: on a fresh connection.
        publisher.publish(queue, _message("after"), reply_to="stream")
        assert publisher._conn is not None and publisher._conn is not conn
    finally:
        publisher.close()
