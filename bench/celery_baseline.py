"""The raw Celery baseline: what a user would write without hyperpool.

Same broker and Redis, the same safety settings that matter for throughput (``acks_late``,
prefetch 1, prefork processes) and Celery's own result backend on Redis, with results awaited
by ``AsyncResult.get()``. Everything else is Celery's default (classic durable queue,
persistent messages, no publisher confirms), which is how such an app is normally run.

The worker side imports this module: ``celery -A bench.celery_baseline worker -Q <queue>``.
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

from bench.common import Proc, start_process

BROKER = os.environ.get("HYPERPOOL_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get("HYPERPOOL_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench_baseline", broker=BROKER, backend=BACKEND, set_as_current=False)
app.conf.update(
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


@app.task(name="bench.noop")
def noop() -> None:
    return None


@app.task(name="bench.true")
def true_cmd() -> int:
    return subprocess.run(["true"], check=False).returncode


@contextmanager
def celery_worker(queue: str, *, concurrency: int, work_dir: Path) -> Iterator[Proc]:
    """A prefork ``celery worker`` of this app on ``queue``, killed on exit."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent),
               PYTHONUNBUFFERED="1")
    proc = start_process(
        [sys.executable, "-m", "celery", "-A", "bench.celery_baseline", "worker", "-Q", queue,
         "-c", str(concurrency), "-P", "prefork", "-n", f"{queue}@%h", "--without-mingle",
         "--without-gossip", "--without-heartbeat", "-l", "WARNING"],
        env=env, cwd=work_dir, log=work_dir / f"celery-{queue}.log", queue=queue)
    try:
        yield proc
    finally:
        proc.stop()


def throughput(task, queue: str, count: int) -> float:
    """Send ``count`` tasks with ``apply_async``, await each with ``get()``; tasks/second."""
    started = time.perf_counter()
    pending = [task.apply_async(queue=queue) for _ in range(count)]
    for result in pending:
        result.get(timeout=120)  # results expire on their own (result_expires)
    return count / (time.perf_counter() - started)


def latencies(task, queue: str, count: int) -> list[float]:
    """``count`` sequential round trips (send, ``get()``), seconds each."""
    out = []
    for _ in range(count):
        started = time.perf_counter()
        result = task.apply_async(queue=queue)
        result.get(timeout=30)
        out.append(time.perf_counter() - started)
    return out
