"""Starting a pool process: ``hyperpool worker --queue Q``.

The Celery worker runs *in this process* (``worker_main``), not as a child, so SIGTERM from
Kubernetes, KEDA or the local supervisor reaches the Celery main process and triggers its warm
shutdown: the running task finishes, then the worker exits.

The pool is Celery's ``threads`` pool: one process, one thread per slot. Every task's real
work is a child process (the runner's command) or a stub sleep, so a slot only waits; a
prefork child per slot cost ~50 MiB each and a pickle round trip through a pipe per task for
nothing. Acknowledgements from the slot threads go through kombu's hub (``call_soon`` wakes
the event loop from another thread since kombu 5.7, celery#6941), so ``acks_late`` stays
prompt and the AMQP channel is only ever written by the loop thread. ``solo`` is no option:
with quorum queues it stalls for ~10 s after the first task when messages are already waiting
at start-up (tasks 3..6 of a pre-filled queue finished 10.4 s after start with solo) —
exactly the scale-from-zero case.

The one thing prefork did better: a task that kills the *worker process* itself (not its own
command; e.g. ``kill -9 $PPID``) now takes the pool's other in-flight tasks with it. They are
not lost — the broker redelivers every unacknowledged message of the closed connection — but
each such delivery counts towards the queue's ``x-delivery-limit``, so an innocent task
sharing a process with a poison message can be parked with it; the engine's ``--attempts``
publishes a fresh attempt. A memory-hungry command is killed by the OOM killer on its own
(it, not the worker, is the biggest process in the container).
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
        "worker", "-Q", queue, "-c", str(concurrency), "-P", "threads", "-n", node,
        "--without-mingle", "--without-gossip", "--without-heartbeat",
        "--loglevel", loglevel,
    ]


def enable_multiprocess_metrics() -> None:
    """Point prometheus-client at a multiprocess directory *before* it is first imported.

    prometheus-client picks its value storage at import time. The local supervisor calls this
    and its workers inherit the directory, so one ``/metrics`` sums them all; a directory
    already given in the environment is kept. A worker on its own is one process and keeps
    its metrics in memory.
    """
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="hyperpool-metrics-")


def run_worker(settings: Settings, queue: str, *, concurrency: int = 1,
               loglevel: str = "INFO", metrics_port: int | None = None) -> None:
    """Block running a pool worker on ``queue`` until warm shutdown."""
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

    if metrics_port is not None:
        metrics.serve(metrics_port)
    app.worker_main(worker_argv(queue, concurrency, loglevel, node))
