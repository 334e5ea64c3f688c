"""The discrete-event core of the pool simulation: tasks, queues, workers, the job model.

What the engine and the workers do is modelled here; *how many* workers a pool has is left to
a runtime (:mod:`bench.simulate_chains`: the Kubernetes chain, the local supervisor, or fixed
warm pools), which sees only what the real one sees and acts through :meth:`Simulation.launch`
and :meth:`Simulation.retire`.

* A task whose dependencies are all done is dispatched at once: published to its pool's queue
  (FIFO), handed to the job model (at most ``max_jobs`` at a time, each ``job_latency`` longer
  than its command), or, for processes without an executor, completed on the spot.
* A worker that is up takes a message per free slot (prefetch 1, ``concurrency`` slots) and
  holds it unacknowledged until the task ends: a pool's *depth* is ready + running, the signal
  :mod:`hyperpool.scaling` is fed with. ``intake`` is the per-message cost of a worker's
  consumer (one process takes messages one after another); ``pool_latency`` the round trip
  from publish to the engine reading the result.
* *Upcoming* tasks of a pool (for the look-ahead policy) are those not yet ready whose
  predecessors have all been dispatched: the engine knows them, since it dispatched their
  inputs' producers itself.
* Stopping is warm: an idle worker leaves after ``stop`` seconds, a busy one first finishes
  its tasks (it takes no new ones), as a Celery worker does on SIGTERM.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.simulate_model import JOB, NONE, POOL, PoolConf, SimDag

STARTING, UP, DRAINING, STOPPING, GONE = "starting", "up", "draining", "stopping", "gone"


class Worker:
    """One replica: a pod on Kubernetes, a ``hyperpool worker`` process locally."""

    __slots__ = ("born", "busy", "gone_at", "intake_free", "pool", "slots", "state", "stop",
                 "up_at")

    def __init__(self, pool: PoolRun, born: float, slots: int):
        self.pool = pool
        self.born = born
        self.up_at: float | None = None
        self.gone_at: float | None = None
        self.slots = slots
        self.busy = 0
        self.state = STARTING
        self.intake_free = born
        self.stop = 0.0  # seconds from idle to gone, set when it is asked to stop


@dataclass
class PoolRun:
    """A pool during the run: its queue, its replicas, and what the engine knows about it."""

    name: str
    conf: PoolConf
    queue: deque[int] = field(default_factory=deque)
    workers: list[Worker] = field(default_factory=list)  # not gone yet
    running: int = 0
    upcoming: int = 0

    @property
    def depth(self) -> int:
        """Ready + unacknowledged messages, what RabbitMQ reports for the queue."""
        return len(self.queue) + self.running

    @property
    def active(self) -> list[Worker]:
        """Replicas not asked to stop (the Deployment's or the supervisor's count)."""
        return [w for w in self.workers if w.state in (STARTING, UP)]


class Runtime(Protocol):
    def attach(self, sim: Simulation) -> None: ...

    def worker_gone(self, sim: Simulation, worker: Worker) -> None: ...


@dataclass
class Result:
    makespan: float
    worker_seconds: float  # replica lifetimes until the makespan (what the pools cost)
    task_starts: list[float]
    task_ends: list[float]
    stopped_at: float | None = None  # when ``until`` held (run(until=...))
    timeline: list[tuple[float, str, int]] = field(default_factory=list)  # (t, pool, replicas)


class Simulation:
    def __init__(self, dag: SimDag, pools: Mapping[str, PoolConf], runtime: Runtime, *,
                 lookahead: bool = False, seed: int = 0, max_jobs: int = 4,
                 job_latency: float = 0.0, intake: float = 0.0, pool_latency: float = 0.0,
                 record: bool = False):
        self.dag = dag
        self.runtime = runtime
        self.lookahead = lookahead
        self.rng = random.Random(seed)
        self.max_jobs = max_jobs
        self.job_latency = job_latency
        self.intake = intake
        self.pool_latency = pool_latency
        self.record = record
        self.pools = {name: PoolRun(name, pools.get(name, PoolConf())) for name in dag.pool_types}
        self.now = 0.0
        self.done = 0
        self.finished_at: float | None = None
        self._events: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        n = len(dag.tasks)
        self._waiting = [len(t.deps) for t in dag.tasks]
        self._undispatched = [len(t.deps) for t in dag.tasks]
        self._upcoming = [False] * n
        self._jobs: deque[int] = deque()
        self._jobs_running = 0
        self._retired: list[Worker] = []
        self.starts = [float("nan")] * n
        self.ends = [float("nan")] * n
        self.timeline: list[tuple[float, str, int]] = []

    # -- the event loop -------------------------------------------------------------------
    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (max(when, self.now), self._seq, fn, args))

    def every(self, period: float, fn: Callable[[], None], phase: float | None = None) -> None:
        """Call ``fn`` every ``period`` s from a random phase (loops are not synchronised)."""
        first = self.rng.uniform(0, period) if phase is None else phase

        def tick() -> None:
            fn()
            self.at(self.now + period, tick)

        self.at(first, tick)

    def run(self, *, until: Callable[[], bool] | None = None, limit: float = 1e5) -> Result:
        """Run to the last task's end, or on until ``until()`` (e.g. the pools are empty)."""
        self.runtime.attach(self)
        for task in self.dag.tasks:
            if not task.deps:
                self._release(task.index)
        while self._events:
            if self.finished_at is not None and (until is None or until()):
                break
            when, _, fn, args = heapq.heappop(self._events)
            if when > limit:
                raise RuntimeError(f"{self.dag.name}: not finished after {limit:g} s "
                                   f"({self.done}/{len(self.dag.tasks)} tasks done)")
            self.now = when
            fn(*args)
        if self.finished_at is None:
            raise RuntimeError(f"{self.dag.name}: stalled with {self.done} tasks done")
        end = self.finished_at
        lifetimes = sum(min(w.gone_at if w.gone_at is not None else end, end) - w.born
                        for w in self._all_workers() if w.born < end)
        return Result(end, lifetimes, self.starts, self.ends,
                      self.now if until is not None else None, self.timeline)

    def _all_workers(self) -> list[Worker]:
        return self._retired + [w for p in self.pools.values() for w in p.workers]

    # -- tasks ----------------------------------------------------------------------------
    def _release(self, index: int) -> None:
        task = self.dag.tasks[index]
        if self._upcoming[index]:
            self._upcoming[index] = False
            self.pools[task.task_type].upcoming -= 1
        self._dispatched(index)
        if task.model == NONE:
            self.starts[index] = self.ends[index] = self.now
            self._complete(index)
        elif task.model == JOB:
            self._jobs.append(index)
            self._start_jobs()
        else:
            pool = self.pools[task.task_type]
            pool.queue.append(index)
            self._feed(pool)

    def _dispatched(self, index: int) -> None:
        for dep in self.dag.dependents[index]:
            self._undispatched[dep] -= 1
            if (self._undispatched[dep] == 0 and self._waiting[dep] > 0
                    and self.dag.tasks[dep].model == POOL):
                self._upcoming[dep] = True
                self.pools[self.dag.tasks[dep].task_type].upcoming += 1

    def _complete(self, index: int) -> None:
        self.done += 1
        for dep in self.dag.dependents[index]:
            self._waiting[dep] -= 1
            if self._waiting[dep] == 0:
                self._release(dep)
        if self.done == len(self.dag.tasks):
            self.finished_at = self.now

    def _start_jobs(self) -> None:
        while self._jobs and self._jobs_running < self.max_jobs:
            index = self._jobs.popleft()
            self._jobs_running += 1
            self.starts[index] = self.now
            self.at(self.now + self.job_latency + self.dag.tasks[index].duration,
                    self._job_done, index)

    def _job_done(self, index: int) -> None:
        self._jobs_running -= 1
        self.ends[index] = self.now
        self._complete(index)
        self._start_jobs()

    def _feed(self, pool: PoolRun) -> None:
        """Deliver ready messages to up workers with a free slot (broker round robin)."""
        if not pool.queue:
            return
        for worker in pool.workers:
            while pool.queue and worker.state == UP and worker.busy < worker.slots:
                index = pool.queue.popleft()
                worker.busy += 1
                pool.running += 1
                begin = max(self.now, worker.intake_free) + self.intake
                worker.intake_free = begin
                self.starts[index] = begin
                self.at(begin + self.dag.tasks[index].duration + self.pool_latency,
                        self._task_done, worker, index)
            if not pool.queue:
                return

    def _task_done(self, worker: Worker, index: int) -> None:
        pool = worker.pool
        worker.busy -= 1
        pool.running -= 1
        self.ends[index] = self.now
        if worker.state == DRAINING and worker.busy == 0:
            self._stop_now(worker)
        self._complete(index)
        self._feed(pool)

    # -- workers (called by runtimes) -----------------------------------------------------
    def launch(self, pool: PoolRun, start: float) -> Worker:
        """A new replica, up (consuming) ``start`` seconds from now."""
        worker = Worker(pool, self.now, max(1, pool.conf.concurrency))
        pool.workers.append(worker)
        self._note(pool)
        self.at(self.now + start, self._up, worker)
        return worker

    def _up(self, worker: Worker) -> None:
        if worker.state != STARTING:
            return
        worker.state = UP
        worker.up_at = self.now
        self._feed(worker.pool)

    def retire(self, worker: Worker, stop: float) -> None:
        """Ask a replica to stop: idle (or still starting) it goes, busy it finishes first."""
        worker.stop = stop
        if worker.state in (STARTING, UP) and worker.busy == 0:
            self._stop_now(worker)
        elif worker.state == UP:
            worker.state = DRAINING

    def _stop_now(self, worker: Worker) -> None:
        worker.state = STOPPING
        self.at(self.now + worker.stop, self._gone, worker)

    def _gone(self, worker: Worker) -> None:
        worker.state = GONE
        worker.gone_at = self.now
        worker.pool.workers.remove(worker)
        self._retired.append(worker)
        self._note(worker.pool)
        self.runtime.worker_gone(self, worker)

    def _note(self, pool: PoolRun) -> None:
        if self.record:
            self.timeline.append((self.now, pool.name, len(pool.workers)))


class StaticPools:
    """Warm pools of a fixed size (``hyperpool worker`` processes started before the run)."""

    def __init__(self, replicas: Mapping[str, int]):
        self.replicas = replicas

    def attach(self, sim: Simulation) -> None:
        for name, pool in sim.pools.items():
            for _ in range(self.replicas.get(name, 1)):
                sim.launch(pool, 0.0)

    def worker_gone(self, sim: Simulation, worker: Worker) -> None:
        """Static pools never stop a worker."""
