"""The worker's consumer, minus Celery's native-delayed-delivery bootstep.

Celery (5.5+) adds ``DelayedDelivery`` whenever it sees quorum queues: it declares 28
exchanges and queues (``celery_delayed_*``) and binds every task queue to them, so that ETA
and countdown tasks work on quorum queues. hyperpool never publishes ETA tasks (retries are
scheduled by the engine), and that set-up would cost every pool process start-up time and
every broker dozens of objects. Selected with the documented ``worker_consumer`` setting.
"""

from __future__ import annotations

from celery.worker.consumer import Consumer


class PoolConsumer(Consumer):
    class Blueprint(Consumer.Blueprint):
        default_steps = [
            step
            for step in Consumer.Blueprint.default_steps
            if not step.endswith(":DelayedDelivery")
        ]
