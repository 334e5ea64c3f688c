"""The Celery application of executor pools: configuration as plain settings in one place.

Safety settings (why each):

* ``task_acks_late`` + ``worker_prefetch_multiplier=1``: a message is acknowledged only after
  its task finished, and a worker holds at most one unstarted message per process, so a dead
  worker loses nothing and does not hoard work that idle workers could take.
* ``task_reject_on_worker_lost``: a task whose worker is lost mid-task is requeued, not
  acknowledged (with the threads pool a lost worker is the whole process, OOM or SIGKILL:
  its connection closes and the broker requeues every message it held).
* ``task_acks_on_failure_or_timeout=False``: an unexpected exception in our task code rejects
  the message without requeue, so it is dead-lettered (kept in ``<queue>.dead``) rather than
  acknowledged and lost.
* ``confirm_publish``: the broker confirms every publish before ``send_task`` returns.
* Remote control, events, mingle and gossip are off: scaling follows queue depth, not worker
  chatter, and each of them costs broker objects and start-up time per worker (hundreds of
  pools on one broker; 0→1 scale-up latency).
"""

from __future__ import annotations

from celery import Celery

from hyperpool.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    app = Celery("hyperpool", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=False,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        broker_transport_options={"confirm_publish": True},
        broker_connection_timeout=settings.connect_timeout,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_enable_remote_control=False,
        # No task has a rate limit: skip Celery's per-message token-bucket lookup.
        worker_disable_rate_limits=True,
        worker_send_task_events=False,
        worker_detect_quorum_queues=True,
        worker_consumer="hyperpool.executor.consumer:PoolConsumer",
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        # Long tasks must not be cancelled when the broker connection blips (at-least-once
        # delivery redelivers them anyway); Celery 5.x warns without an explicit choice.
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    app.conf.hyperpool_settings = settings
    return app


app = create_app()
# Register hyperpool.run on the module-level app used by `celery -A hyperpool.executor.app`.
from hyperpool.executor import tasks as _tasks  # noqa: E402

_tasks.register(app)
