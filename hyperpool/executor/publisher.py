"""Publishing task messages to pool queues, for the engine.

Results do not come back through Celery: each message names the run's completion stream
(``reply_to``) and the engine reads that one stream (see ``results.py``), so there is no
per-task subscription or polling.
"""

from __future__ import annotations

from celery import Celery

from hyperpool.executor.app import create_app
from hyperpool.executor.queues import TASK_EXCHANGE, declare_pool_queues, task_queue
from hyperpool.executor.tasks import register
from hyperpool.models import TaskMessage
from hyperpool.services import broker_connection, check_broker
from hyperpool.settings import Settings

RUN_TASK = "hyperpool.run"


class Publisher:
    """Sends ``hyperpool.run`` messages with publisher confirms to declared quorum queues."""

    def __init__(self, settings: Settings, app: Celery | None = None):
        self.settings = settings
        self.app = app or create_app(settings)
        if RUN_TASK not in self.app.tasks:
            register(self.app)
        self._declared: set[str] = set()

    def ensure_queue(self, queue: str) -> None:
        if queue in self._declared:
            return
        check_broker(self.settings)
        with broker_connection(self.settings) as conn:
            declare_pool_queues(conn, queue, delivery_limit=self.settings.delivery_limit)
        self._declared.add(queue)

    def publish(self, queue: str, message: TaskMessage, *, reply_to: str, attempt: int = 1,
                run_id: str | None = None) -> None:
        self.ensure_queue(queue)
        self.app.send_task(
            RUN_TASK,
            args=[message.model_dump(mode="json", exclude_none=True)],
            kwargs={"reply_to": reply_to, "attempt": attempt, "run_id": run_id},
            queue=task_queue(queue, delivery_limit=self.settings.delivery_limit),
            exchange=TASK_EXCHANGE,
            routing_key=queue,
            task_id=f"{message.taskId}#{attempt}",
            retry=True,
            retry_policy={"max_retries": 10, "interval_start": 0.2, "interval_step": 0.5,
                          "interval_max": 3},
        )

    def close(self) -> None:
        self.app.close()
