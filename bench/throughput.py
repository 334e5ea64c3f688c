"""Throughput (goals 1 and 2) and idle latency (goal 3): hyperpool vs raw Celery, side by side.

Both sides get the same machine, broker, Redis and worker shape (two task-running processes,
``acks_late``, prefetch 1), and their runs are interleaved so background noise hits both.
Raw Celery is one prefork worker with two child processes; hyperpool runs in the same shape
as two ``hyperpool worker -c 1`` processes (a pool with two replicas) and, beside it, as one
worker with two slot threads (``-c 2``).
hyperpool is measured through its whole path: an in-process :class:`Engine` (the one
``hyperpool run`` uses) publishes a generated workflow's tasks, the ``hyperpool worker``
processes run them and report to the run's completion stream, and the engine releases and
counts them. Throughput is tasks / engine makespan; latency is the engine's own clock from
the start of a task's dispatch to the moment it processes the task's result.

* no-op: ``--stub-sleep 0`` (in-process stub) vs a Celery task returning ``None``;
* command: the real ``true`` executable through the runner (logs, exit code) vs a Celery task
  doing ``subprocess.run(["true"])``;
* latency: a 1-wide chain, so exactly one task is in flight on an otherwise idle system.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from bench import celery_baseline as raw
from bench.common import bench_settings, delete_queues, median, new_namespace, percentile, workers
from bench.gen import chain, flat, write
from hyperpool.engine.dag import build_dag
from hyperpool.engine.loader import load_workflow
from hyperpool.engine.run import Engine, RunOptions
from hyperpool.engine.state import DISPATCHED
from hyperpool.executor.publisher import RUN_TASK, Publisher
from hyperpool.executor.queues import TASK_EXCHANGE, task_queue
from hyperpool.executor.results import done_key
from hyperpool.models import TaskMessage, TaskResult
from hyperpool.routing import load_routing
from hyperpool.services import check_redis
from hyperpool.settings import Settings

TASK_TYPE = "task"
WARMUP = 5  # first tasks of a chain: connections and caches still cold


@dataclass
class Comparison:
    """Samples of one metric for both systems (tasks/s, or seconds per task).

    ``cpu`` holds, per system, the CPU milliseconds per task each participant spent in the
    last measured run: where the time goes, and why the ratio is what it is.
    """

    hyperpool: list[float] = field(default_factory=list)  # 2 workers x 1 slot (the goals)
    hyperpool_threads: list[float] = field(default_factory=list)  # 1 worker x 2 slot threads
    celery: list[float] = field(default_factory=list)
    celery_safe: list[float] = field(default_factory=list)  # same safety settings (the goals)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)


def _listener(port: int) -> psutil.Process | None:
    """The process listening on ``port`` (the broker or Redis this benchmark talks to; other
    RabbitMQ or Redis instances on the machine, e.g. tests' private ones, are not counted)."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    return None


class CpuMeter:
    """CPU seconds of the engine/client (this process), a worker's family, RabbitMQ, Redis."""

    def __init__(self, *worker_pids: int):
        self.procs: dict[str, list[psutil.Process | None]] = {
            "engine/client": [psutil.Process()],
            "worker": [psutil.Process(pid) for pid in worker_pids],
            "rabbitmq": [_listener(5672)], "redis": [_listener(6379)]}

    def _now(self) -> dict[str, float]:
        out = {}
        for name, procs in self.procs.items():
            if None in procs:
                continue
            family = [member for proc in procs if proc is not None for member in
                      (proc, *(proc.children(recursive=True) if name == "worker" else []))]
            total = 0.0
            for member in family:
                with contextlib.suppress(psutil.Error):
                    times = member.cpu_times()
                    total += times.user + times.system
            out[name] = total
        return out

    def measure(self, fn, tasks: int):
        """Call ``fn``; return (its value, CPU ms per task of each participant)."""
        before = self._now()
        value = fn()
        after = self._now()
        return value, {k: (after[k] - before[k]) * 1e3 / tasks for k in after}


class TimingEngine(Engine):
    """The real engine, recording dispatch -> result-processed time of every task."""

    latencies: list[float]

    def _on_result(self, result: TaskResult) -> None:
        index = self._ids.get(result.task_id)
        if index is not None and self.state.status[index] == DISPATCHED:
            sent = self.dispatched_at.get(index)
            if sent is not None:
                self.latencies.append(time.time() - sent)
        super()._on_result(result)


class SendTaskPublisher(Publisher):
    """The publisher as it was before batching: ``send_task`` per message, confirm each."""

    def publish_many(self, items, *, reply_to, run_id=None, fresh=False) -> None:
        for queue, message, attempt in items:
            self.ensure_queue(queue)
            self.app.send_task(
                RUN_TASK, args=[message.model_dump(mode="json", exclude_none=True)],
                kwargs={"reply_to": reply_to, "attempt": attempt, "run_id": run_id},
                queue=task_queue(queue, delivery_limit=self.settings.delivery_limit),
                exchange=TASK_EXCHANGE, routing_key=queue,
                task_id=f"{message.taskId}#{attempt}", retry=True,
                retry_policy={"max_retries": 10, "interval_start": 0.2, "interval_step": 0.5,
                              "interval_max": 3})


class UnbatchedPublisher(Publisher):
    """Today's message encoding, but one confirm round trip per message."""

    def publish_many(self, items, *, reply_to, run_id=None, fresh=False) -> None:
        for item in items:
            super().publish_many([item], reply_to=reply_to, run_id=run_id, fresh=fresh)


PUBLISHERS = {"batched (current)": Publisher, "confirm per message": UnbatchedPublisher,
              "send_task (before)": SendTaskPublisher}


class HyperpoolSide:
    """A work dir, a publisher and a Redis client reused by every run of one benchmark."""

    def __init__(self, settings: Settings, work_dir: Path,
                 publisher: type[Publisher] = Publisher):
        self.settings = settings
        self.work_dir = work_dir
        self.client: redis.Redis = check_redis(settings)
        self.publisher = publisher(settings)

    def run(self, stub: float | None) -> TimingEngine:
        dag = build_dag(load_workflow(self.work_dir))
        routing = load_routing(self.work_dir, self.settings.namespace)
        engine = TimingEngine(dag, routing, self.settings,
                              RunOptions(work_dir=self.work_dir, stub_sleep=stub),
                              self.client, self.publisher)
        engine.latencies = []
        outcome = engine.run()
        self.client.delete(engine.stream, done_key(engine.run_id))
        if not outcome.ok:
            raise RuntimeError(f"bench run failed: {outcome.failures[:3]}")
        engine.makespan = outcome.finished - outcome.started  # type: ignore[attr-defined]
        return engine

    def close(self) -> None:
        self.publisher.close()


def _throughput_pair(*, tasks: int, repeats: int, stub: float | None, raw_task, safe_task,
                     concurrency: int) -> Comparison:
    namespace, threaded = new_namespace(), new_namespace()
    work = Path(tempfile.mkdtemp(prefix="hyperpool-bench-tp-"))
    write(work, flat(tasks, task_type=TASK_TYPE), [TASK_TYPE])
    settings = bench_settings(namespace, work)
    raw_queue, safe_queue = f"{namespace}.raw", f"{namespace}.rawsafe"
    out = Comparison()
    side, side_threads = HyperpoolSide(settings, work), HyperpoolSide(
        bench_settings(threaded, work), work)
    try:
        with workers([(f"{namespace}.{TASK_TYPE}", 1)] * concurrency, namespace=namespace,
                     work_dir=work) as pool, \
                workers([(f"{threaded}.{TASK_TYPE}", concurrency)], namespace=threaded,
                        work_dir=work) as (pool_threads,), \
                raw.celery_worker(raw_queue, concurrency=concurrency, work_dir=work) as base, \
                raw.celery_worker(safe_queue, concurrency=concurrency, work_dir=work,
                                  safe=True) as safe:
            side.run(stub)  # warm-up: queue declared, worker processes warm
            side_threads.run(stub)
            raw.throughput(raw_task, raw_queue, min(tasks, 100))
            raw.throughput(safe_task, safe_queue, min(tasks, 100))
            ours = CpuMeter(*(p.proc.pid for p in pool))
            ours_threads = CpuMeter(pool_threads.proc.pid)
            theirs, theirs_safe = CpuMeter(base.proc.pid), CpuMeter(safe.proc.pid)
            for _ in range(repeats):
                engine, out.cpu["hyperpool"] = ours.measure(lambda: side.run(stub), tasks)
                out.hyperpool.append(tasks / engine.makespan)
                rate, out.cpu["celery_safe"] = theirs_safe.measure(
                    lambda: raw.throughput(safe_task, safe_queue, tasks), tasks)
                out.celery_safe.append(rate)
                engine, out.cpu["hyperpool_threads"] = ours_threads.measure(
                    lambda: side_threads.run(stub), tasks)
                out.hyperpool_threads.append(tasks / engine.makespan)
                rate, out.cpu["celery"] = theirs.measure(
                    lambda: raw.throughput(raw_task, raw_queue, tasks), tasks)
                out.celery.append(rate)
    finally:
        side.close()
        side_threads.close()
        for space in (namespace, threaded):
            delete_queues(settings, space + ".")
        shutil.rmtree(work, ignore_errors=True)
    return out


def noop_throughput(*, tasks: int, repeats: int, concurrency: int = 2) -> Comparison:
    return _throughput_pair(tasks=tasks, repeats=repeats, stub=0.0, raw_task=raw.noop,
                            safe_task=raw.safe_noop, concurrency=concurrency)


def command_throughput(*, tasks: int, repeats: int, concurrency: int = 2) -> Comparison:
    return _throughput_pair(tasks=tasks, repeats=repeats, stub=None, raw_task=raw.true_cmd,
                            safe_task=raw.safe_true_cmd, concurrency=concurrency)


def publisher_variants(*, tasks: int, repeats: int, concurrency: int = 2
                       ) -> dict[str, list[float]]:
    """End-to-end no-op tasks/s with each publisher variant (the effect of batching)."""
    namespace = new_namespace()
    work = Path(tempfile.mkdtemp(prefix="hyperpool-bench-pub-"))
    write(work, flat(tasks, task_type=TASK_TYPE), [TASK_TYPE])
    settings = bench_settings(namespace, work)
    sides = {name: HyperpoolSide(settings, work, cls) for name, cls in PUBLISHERS.items()}
    out: dict[str, list[float]] = {name: [] for name in sides}
    try:
        with workers([(f"{namespace}.{TASK_TYPE}", concurrency)], namespace=namespace,
                     work_dir=work):
            for side in sides.values():
                side.run(0.0)
            for _ in range(repeats):
                for name, side in sides.items():
                    out[name].append(tasks / side.run(0.0).makespan)
    finally:
        for side in sides.values():
            side.close()
        delete_queues(settings, namespace + ".")
        shutil.rmtree(work, ignore_errors=True)
    return out


def publish_rates(*, messages: int) -> dict[str, float]:
    """Engine-side publishing capacity per variant: messages/s into a queue nobody consumes."""
    namespace = new_namespace()
    work = Path(tempfile.mkdtemp(prefix="hyperpool-bench-pubrate-"))
    settings = bench_settings(namespace, work)
    message = TaskMessage(executable="true", args=["in.fits", "out.fits"], name=TASK_TYPE,
                          work_dir=str(work), inputs=["in.fits"], outputs=["out.fits"])
    out = {}
    try:
        for name, cls in PUBLISHERS.items():
            publisher = cls(settings)
            queue = f"{namespace}.{len(out)}"
            publisher.publish(queue, message.model_copy(update={"taskId": "warm"}),
                              reply_to="bench")
            items = [(queue, message.model_copy(update={"taskId": f"t{i}"}), 1)
                     for i in range(messages)]
            started = time.perf_counter()
            publisher.publish_many(items, reply_to="bench", run_id="bench")
            out[name] = messages / (time.perf_counter() - started)
            publisher.close()
    finally:
        delete_queues(settings, namespace + ".")
        shutil.rmtree(work, ignore_errors=True)
    return out


def latency(*, samples: int) -> Comparison:
    """Sequential single-task round trips on an idle system (seconds per task)."""
    namespace = new_namespace()
    work = Path(tempfile.mkdtemp(prefix="hyperpool-bench-lat-"))
    write(work, chain(samples + WARMUP, task_type=TASK_TYPE), [TASK_TYPE])
    settings = bench_settings(namespace, work)
    raw_queue, safe_queue = f"{namespace}.raw", f"{namespace}.rawsafe"
    out = Comparison()
    side = HyperpoolSide(settings, work)
    try:
        with workers([(f"{namespace}.{TASK_TYPE}", 1)], namespace=namespace, work_dir=work), \
                raw.celery_worker(raw_queue, concurrency=1, work_dir=work), \
                raw.celery_worker(safe_queue, concurrency=1, work_dir=work, safe=True):
            raw.latencies(raw.noop, raw_queue, 20)  # warm-up
            raw.latencies(raw.safe_noop, safe_queue, 20)
            half = samples // 2
            # Interleave halves so drifting background load affects all sides alike.
            out.celery += raw.latencies(raw.noop, raw_queue, half)
            out.celery_safe += raw.latencies(raw.safe_noop, safe_queue, half)
            out.hyperpool += side.run(0.0).latencies[WARMUP:]
            out.celery_safe += raw.latencies(raw.safe_noop, safe_queue, samples - half)
            out.celery += raw.latencies(raw.noop, raw_queue, samples - half)
    finally:
        side.close()
        delete_queues(settings, namespace + ".")
        shutil.rmtree(work, ignore_errors=True)
    return out


def summarize_latency(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "mean": sum(values) / len(values)}


if __name__ == "__main__":
    tp = noop_throughput(tasks=500, repeats=1)
    print("noop tasks/s hyperpool", tp.hyperpool, "celery", tp.celery, "safe", tp.celery_safe)
    print("cpu ms/task", tp.cpu)
    lat = latency(samples=100)
    print("latency ms hyperpool", {k: v * 1e3 for k, v in summarize_latency(lat.hyperpool).items()},
          "celery", {k: v * 1e3 for k, v in summarize_latency(lat.celery).items()},
          median(lat.hyperpool))
