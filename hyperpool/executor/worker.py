"""Starting a pool process: ``hyperpool worker --queue Q``.

The Celery worker runs *in this process* (``worker_main``), not as a child, so SIGTERM from
Kubernetes, KEDA or the local supervisor reaches the Celery main process and triggers its warm
shutdown: the running task finishes, then the worker exits. With concurrency 1 the ``solo``
pool runs the task in the main process (one process per replica: half the memory and no IPC
hop); larger concurrency uses prefork.
"""

from __future__ import annotations

import socket

from hyperpool.executor.queues import declare_pool_queues, task_queue
from hyperpool.services import broker_connection, check_broker, check_redis
from hyperpool.settings import Settings


def worker_argv(queue: str, concurrency: int, loglevel: str, node: str) -> list[str]:
    pool = "solo" if concurrency == 1 else "prefork"
    return [
        "worker", "-Q", queue, "-c", str(concurrency), "-P", pool, "-n", node,
        "--without-mingle", "--without-gossip", "--without-heartbeat",
        "--loglevel", loglevel,
    ]


def run_worker(settings: Settings, queue: str, *, concurrency: int = 1,
               loglevel: str = "INFO") -> None:
    """Block running a pool worker on ``queue`` until warm shutdown."""
    import os

    check_broker(settings)
    check_redis(settings)
    with broker_connection(settings) as conn:
        declare_pool_queues(conn, queue, delivery_limit=settings.delivery_limit)
    from hyperpool.executor.app import app

    app.conf.task_queues = [task_queue(queue, delivery_limit=settings.delivery_limit)]
    app.conf.hyperpool_settings = settings
    node = f"{queue}@{socket.gethostname()}-{os.getpid()}"
    app.worker_main(worker_argv(queue, concurrency, loglevel, node))
