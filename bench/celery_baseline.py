"""The raw Celery baseline: what a user would write without hyperpool.

Same broker and Redis, ``acks_late``, prefetch 1, two prefork processes (the issue's
baseline) and Celery's own result backend on Redis, with results awaited by
``AsyncResult.get()``. Two flavours:

* ``app``: everything else is Celery's default (classic durable queue, persistent messages,
  no publisher confirms), which is how such an app is normally run;
* ``safe_app``: the *same safety settings as hyperpool* on top: every publish confirmed by
  the broker (``confirm_publish``) and a durable quorum queue with a delivery limit. The goals
  compare against this one ("same safety settings"); the default one is reported beside it.

The worker side imports this module: ``celery -A bench.celery_baseline[:safe_app] worker``;
the quorum queue's name comes in ``BENCH_SAFE_QUEUE`` (Celery must declare it with the same
arguments as the client).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from celery import Celery
from kombu import Queue

from bench.common import Proc, start_process

BROKER = os.environ.get("HYPERPOOL_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get("HYPERPOOL_REDIS_URL", "redis://127.0.0.1:6379/0")

COMMON = dict(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_reject_on_worker_lost=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_cancel_long_running_tasks_on_connection_loss=False,
)
DELIVERY_LIMIT = 5  # hyperpool's default x-delivery-limit

app = Celery("bench_baseline", broker=BROKER, backend=BACKEND, set_as_current=False)
app.conf.update(COMMON)
safe_app = Celery("bench_baseline_safe", broker=BROKER, backend=BACKEND, set_as_current=False)
safe_app.conf.update(COMMON, broker_transport_options={"confirm_publish": True},
                     worker_detect_quorum_queues=True)


def quorum_queue(name: str) -> Queue:
    return Queue(name, routing_key=name, durable=True,
                 queue_arguments={"x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT})


if os.environ.get("BENCH_SAFE_QUEUE"):
    safe_app.conf.task_queues = [quorum_queue(os.environ["BENCH_SAFE_QUEUE"])]


def _noop() -> None:
    return None


def _true() -> int:
    return subprocess.run(["true"], check=False).returncode


noop = app.task(name="bench.noop")(_noop)
true_cmd = app.task(name="bench.true")(_true)
safe_noop = safe_app.task(name="bench.noop")(_noop)
safe_true_cmd = safe_app.task(name="bench.true")(_true)


@contextmanager
def celery_worker(queue: str, *, concurrency: int, work_dir: Path, safe: bool = False
                  ) -> Iterator[Proc]:
    """A prefork ``celery worker`` of ``app`` (or ``safe_app``) on ``queue``, killed on exit."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent),
               PYTHONUNBUFFERED="1")
    target = "bench.celery_baseline"
    if safe:
        env["BENCH_SAFE_QUEUE"] = queue
        target += ":safe_app"
    proc = start_process(
        [sys.executable, "-m", "celery", "-A", target, "worker", "-Q", queue,
         "-c", str(concurrency), "-P", "prefork", "-n", f"{queue}@%h", "--without-mingle",
         "--without-gossip", "--without-heartbeat", "-l", "WARNING"],
        env=env, cwd=work_dir, log=work_dir / f"celery-{queue}.log", queue=queue)
    try:
        yield proc
    finally:
        proc.stop()


def _target(task, queue: str) -> str | Queue:
    return quorum_queue(queue) if task.app is safe_app else queue


def throughput(task, queue: str, count: int) -> float:
    """Send ``count`` tasks with ``apply_async``, await each with ``get()``; tasks/second."""
    target = _target(task, queue)
    started = time.perf_counter()
    pending = [task.apply_async(queue=target) for _ in range(count)]
    for result in pending:
        result.get(timeout=120)  # results expire on their own (result_expires)
    return count / (time.perf_counter() - started)


def latencies(task, queue: str, count: int) -> list[float]:
    """``count`` sequential round trips (send, ``get()``), seconds each."""
    out = []
    target = _target(task, queue)
    for _ in range(count):
        started = time.perf_counter()
        result = task.apply_async(queue=target)
        result.get(timeout=30)
        out.append(time.perf_counter() - started)
    return out
