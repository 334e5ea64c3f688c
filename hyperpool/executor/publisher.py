"""Publishing task messages to pool queues, for the engine.

Results do not come back through Celery: each message names the run's completion stream
(``reply_to``) and the engine reads that one stream (see ``results.py``), so there is no
per-task subscription or polling.

Messages are Celery protocol-2 ``hyperpool.run`` messages (built by Celery's own
``as_task_v2``, so any Celery worker reads them), published persistent to the durable quorum
queue with publisher confirms. They are not sent with ``send_task``, for speed (measured in
docs/benchmarks.md):

* ``send_task`` waits for the broker's confirm of every message before returning: one round
  trip (and, for a quorum queue, one Raft commit) per task. :meth:`Publisher.publish_many`
  publishes a whole batch of ready tasks on one confirm-mode channel and then waits once for
  all confirms (the broker acknowledges them cumulatively). A message counts as sent only
  once confirmed, exactly as before; after a connection error the unconfirmed part of the
  batch is published again (at-least-once, like any republish: executors skip a task that
  already succeeded, and the engine counts a duplicate result once).
* ``send_task`` renders ``saferepr`` of the arguments into the ``argsrepr`` header, which
  cost more CPU than everything else the engine does per task; we pass a short description.
* Headers that only say "not set" (``eta: None``, ``timelimit: [None, None]``, ``stamps: {}``
  and the like; 9 of 19) are left out: Celery's worker reads every one of them with a
  default, and py-amqp encodes and decodes the header table in pure Python (measured: 23 ->
  15 us to encode, 26 -> 14 us to decode per message).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

import amqp
from celery import Celery
from kombu import Connection
from kombu.exceptions import OperationalError

from hyperpool.executor.app import create_app
from hyperpool.executor.queues import TASK_EXCHANGE, declare_pool_queues
from hyperpool.executor.tasks import register
from hyperpool.models import TaskMessage
from hyperpool.services import broker_connection, check_broker
from hyperpool.settings import Settings, mask_url

RUN_TASK = "hyperpool.run"
CONFIRM_BATCH = 500  # messages published before waiting for their confirms
CONFIRM_TIMEOUT = 30.0
MAX_RETRIES = 10
PERSISTENT = 2
_UNSET = (None, [None, None], {})  # header values Celery's worker treats as absent

log = logging.getLogger("hyperpool.publisher")


class PublishNacked(RuntimeError):
    """The broker refused (nacked) a message: it was not enqueued."""


Item = tuple[str, "TaskMessage | dict[str, Any]", int]


def without_fresh(message: amqp.Message) -> amqp.Message:
    """``message`` with its ``fresh`` promise (no other copy exists) taken back."""
    args, kwargs, embed = json.loads(message.body)
    if not kwargs.pop("fresh", False):
        return message
    message.body = json.dumps([args, kwargs, embed])
    return message


class Publisher:
    """Sends ``hyperpool.run`` messages with publisher confirms to declared quorum queues."""

    def __init__(self, settings: Settings, app: Celery | None = None):
        self.settings = settings
        self.app = app or create_app(settings)
        if RUN_TASK not in self.app.tasks:
            register(self.app)
        self._declared: set[str] = set()
        self._origin = f"hyperpool-engine@{socket.gethostname()}"
        self._conn: Connection | None = None
        self._channel: Any = None
        self._tag = 0  # delivery tag of the last message published on the channel
        self._unconfirmed: set[int] = set()
        self._nacked = 0

    def ensure_queue(self, queue: str) -> None:
        self.declare_queues([queue])

    def declare_queues(self, queues: Iterable[str]) -> None:
        """Declare pool queues (and their dead-letter queues) not declared by this publisher.

        On the publisher's own connection: a declaration on a new connection (plus the
        reachability check before it) took about 9 ms for an existing queue (20-40 ms on a
        busy machine), and a run paid it at the first publish of every pooled type, i.e. on
        the critical path of each stage whose type first appears mid-run (six single-task
        stages in Montage). The engine declares all its queues when a run starts. If that
        connection fails, the declaration is retried on a new one after the usual check,
        which names the broker it cannot reach.
        """
        todo = [queue for queue in dict.fromkeys(queues) if queue not in self._declared]
        if not todo:
            return
        try:
            self._open()
            self._declare_on(self._conn, todo)
            return
        except (*self._recoverable(), OperationalError, OSError):
            self._reset()
        except BaseException:
            # e.g. PRECONDITION_FAILED (a queue exists with other arguments) closed a channel
            self._reset(polite=False)
            raise
        check_broker(self.settings)
        with broker_connection(self.settings) as conn:
            self._declare_on(conn, todo)

    def _declare_on(self, conn: Connection, queues: list[str]) -> None:
        for queue in queues:
            declare_pool_queues(conn, queue, delivery_limit=self.settings.delivery_limit)
            self._declared.add(queue)

    def publish(self, queue: str, message: TaskMessage | dict[str, Any], *, reply_to: str,
                attempt: int = 1, run_id: str | None = None) -> None:
        """Publish one message and return once the broker confirmed it."""
        self.publish_many([(queue, message, attempt)], reply_to=reply_to, run_id=run_id)

    def publish_many(self, items: Iterable[Item], *, reply_to: str,
                     run_id: str | None = None, fresh: bool = False) -> None:
        """Publish (queue, message, attempt) items; return once the broker confirmed all.

        ``fresh``: the caller vouches that no other copy of these messages can exist (an
        engine's first publish of first attempts, not after ``--resume``); executors then
        skip the done-set lookup for their first delivery (``executor/results.py``).
        """
        encoded = [self._encode(queue, message, attempt, reply_to, run_id,
                                fresh and attempt == 1)
                   for queue, message, attempt in items]
        self.declare_queues(queue for queue, _ in encoded)
        for start in range(0, len(encoded), CONFIRM_BATCH):
            self._send_confirmed(encoded[start:start + CONFIRM_BATCH])

    def _encode(self, queue: str, message: TaskMessage | dict[str, Any], attempt: int,
                reply_to: str, run_id: str | None, fresh: bool = False
                ) -> tuple[str, amqp.Message]:
        data = (message.model_dump(mode="json", exclude_none=True)
                if isinstance(message, TaskMessage) else message)
        task_id = f"{data.get('taskId')}#{attempt}"
        kwargs: dict[str, Any] = {"reply_to": reply_to, "attempt": attempt, "run_id": run_id}
        if fresh:
            kwargs["fresh"] = True
        headers, properties, body, _ = self.app.amqp.as_task_v2(
            task_id, RUN_TASK, args=[data], kwargs=kwargs, ignore_result=True,
            origin=self._origin, argsrepr=f"[{data.get('name')}: {data.get('executable')}]",
            kwargsrepr=repr(kwargs))
        headers = {k: v for k, v in headers.items() if v not in _UNSET}
        return queue, amqp.Message(
            json.dumps(body), content_type="application/json", content_encoding="utf-8",
            application_headers=headers, delivery_mode=PERSISTENT, **properties)

    # -- confirmed publishing -----------------------------------------------------------
    def _open(self) -> Any:
        if self._channel is None:
            conn = Connection(self.settings.broker_url, heartbeat=0,
                              connect_timeout=self.settings.connect_timeout)
            conn.ensure_connection(max_retries=1, timeout=self.settings.connect_timeout)
            channel = conn.channel()
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            self._conn, self._channel, self._tag = conn, channel, 0
            self._unconfirmed, self._nacked = set(), 0
        return self._channel

    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {t for t in self._unconfirmed if t > tag}
        else:
            self._unconfirmed.discard(tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        before = len(self._unconfirmed)
        self._on_ack(tag, multiple)
        self._nacked += before - len(self._unconfirmed)

    def _send_confirmed(self, batch: Sequence[tuple[str, amqp.Message]]) -> None:
        delay = 0.2
        for retry in range(MAX_RETRIES + 1):
            if retry:
                # Unconfirmed is not unsent: the broker may hold a copy already, so the
                # republished ones must not claim to be the only copy.
                batch = [(queue, without_fresh(message)) for queue, message in batch]
            try:
                channel = self._open()
                for queue, message in batch:
                    channel.basic_publish(message, exchange=TASK_EXCHANGE.name,
                                          routing_key=queue)
                    self._tag += 1
                    self._unconfirmed.add(self._tag)
                deadline = time.monotonic() + CONFIRM_TIMEOUT
                while self._unconfirmed:
                    self._conn.drain_events(timeout=max(0.01, deadline - time.monotonic()))
                if self._nacked:
                    count, self._nacked = self._nacked, 0
                    raise PublishNacked(f"RabbitMQ refused {count} task message(s)")
                return
            except (*self._recoverable(), OperationalError, OSError) as exc:
                self._reset()
                if retry == MAX_RETRIES:
                    raise
                log.warning("publishing to %s failed (%s); retrying in %.1fs",
                            mask_url(self.settings.broker_url), exc, delay)
                time.sleep(delay)
                delay = min(delay + 0.5, 3.0)
            except PublishNacked:
                raise  # the broker answered: the connection is in step and stays open
            except BaseException:
                # Ctrl-C (KeyboardInterrupt) or a bug mid-frame: py-amqp's read_frame drops
                # the part of a frame it had read, so the connection's byte stream can be
                # out of step, and a polite close, which waits for CloseOk without a
                # timeout, could then wait for ever. Only drop the socket.
                self._reset(polite=False)
                raise

    def _recoverable(self) -> tuple[type[BaseException], ...]:
        probe = self._conn or Connection(self.settings.broker_url)
        return (*probe.recoverable_connection_errors, *probe.recoverable_channel_errors)

    def _reset(self, polite: bool = True) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):  # it may be broken already
                if polite:
                    conn.release()
                else:
                    conn.collect()  # kombu: free the resources, no protocol exchange

    def close(self) -> None:
        self._reset()
        self.app.close()
