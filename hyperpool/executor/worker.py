"""Starting a pool process: ``hyperpool worker --queue Q``.

The Celery worker runs *in this process* (``worker_main``), not as a child, so SIGTERM from
Kubernetes, KEDA or the local supervisor reaches the Celery main process and triggers its warm
shutdown: the running task finishes, then the worker exits.

The pool is always prefork, even for concurrency 1. The ``solo`` pool would save a process,
but with quorum queues on Celery 5.7 it stalls for ~10 s after the first task when messages
are already waiting at start-up (measured here: tasks 3..6 of a pre-filled queue finished
10.4 s after start with solo, 0.58 s with prefork) — exactly the scale-from-zero case.
"""

from __future__ import annotations

import os
import socket
import tempfile

from hyperpool.executor.queues import declare_pool_queues, task_queue
from hyperpool.services import broker_connection, check_broker, check_redis
from hyperpool.settings import Settings


def worker_argv(queue: str, concurrency: int, loglevel: str, node: str) -> list[str]:
    return [
        "worker", "-Q", queue, "-c", str(concurrency), "-P", "prefork", "-n", node,
        "--without-mingle", "--without-gossip", "--without-heartbeat",
        "--loglevel", loglevel,
    ]


def enable_multiprocess_metrics() -> None:
    """Point prometheus-client at a per-worker directory *before* it is first imported.

    prometheus-client picks its value storage at import time; prefork children then write
    their samples to files there and the main process's ``/metrics`` sums them. A directory
    given in the environment (the local supervisor shares one across its workers) is kept.
    """
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="hyperpool-metrics-")


def run_worker(settings: Settings, queue: str, *, concurrency: int = 1,
               loglevel: str = "INFO", metrics_port: int | None = None) -> None:
    """Block running a pool worker on ``queue`` until warm shutdown."""
    if metrics_port is not None or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        enable_multiprocess_metrics()
    check_broker(settings)
    check_redis(settings)
    with broker_connection(settings) as conn:
        declare_pool_queues(conn, queue, delivery_limit=settings.delivery_limit)
    from hyperpool.executor.app import app

    app.conf.task_queues = [task_queue(queue, delivery_limit=settings.delivery_limit)]
    app.conf.hyperpool_settings = settings
    node = f"{queue}@{socket.gethostname()}-{os.getpid()}"
    from celery import signals

    from hyperpool import metrics

    # Celery's SIGTERM handler only sets a flag that the event loop checks when it wakes up,
    # and an idle kombu hub sleeps in poll() for up to 10 s: an idle worker took 4-10 s to
    # leave on scale-down. A 0.5 s no-op timer bounds that wait (measured: 1.7 s exit).
    @signals.worker_ready.connect(weak=False)
    def _wake_up_for_signals(sender: object = None, **_: object) -> None:
        hub = getattr(getattr(sender, "controller", None), "hub", None)
        if hub is not None:
            hub.call_repeatedly(0.5, lambda: None)

    @signals.worker_process_shutdown.connect(weak=False)
    def _child_gone(pid: int | None = None, **_: object) -> None:
        metrics.mark_process_dead(pid or os.getpid())

    if metrics_port is not None:
        metrics.serve(metrics_port)
    app.worker_main(worker_argv(queue, concurrency, loglevel, node))
