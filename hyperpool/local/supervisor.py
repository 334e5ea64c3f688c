"""The local pool supervisor: keep 0..max worker processes per pool, sized by queue depth.

Every tick (0.25 s by default) it reaps exited workers, measures the pool queues
(:mod:`~hyperpool.local.probe`), computes desired replicas with the shared formula
(:func:`hyperpool.scaling.desired_replicas`, the local budget playing the ResourceQuota) and
reconciles:

* **Up at once**: a pool below its desired count starts workers in the same tick, round-robin
  across pools while the budget has room (the budget is a hard limit, like a ResourceQuota
  admitting pods; the formula's ceilings may add up to a little more than it).
* **Down after a cooldown**: the target is the *highest* desired count of the last ``cooldown``
  seconds (the HPA's stabilisation window, KEDA's cooldownPeriod for zero), so a pool reaches
  zero only after its queue stayed empty that long, and a burst's tail does not cause churn.
  Exception: when another pool wants workers the budget cannot admit, surplus held only by
  that window is released now — the Montage stages follow each other and should not wait
  ``cooldown`` for the previous stage's idle workers.
* **Stopping is warm**: SIGTERM to idle workers first, then the newest; a busy worker finishes
  its task. Draining workers that still run a task keep their budget until they exit, as
  terminating pods keep their quota.
* **Crashes**: an unexpected exit is logged and the worker is replaced if still desired, with
  exponential back-off for workers that die young (a wrong broker URL must not fork-bomb).

The supervisor runs in a thread of its own (:meth:`Supervisor.start`); the caller's thread
keeps signal handling (``pools up``) or the workflow engine (``hyperpool run``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperpool.executor import template
from hyperpool.local.budget import NOTHING, Resources
from hyperpool.local.manifests import PoolConfig, check_fit
from hyperpool.local.pool import Pool
from hyperpool.local.probe import QueueProbe
from hyperpool.local.workers import WorkerProcess, refresh_busy
from hyperpool.scaling import PoolDemand, desired_replicas
from hyperpool.settings import Settings

log = logging.getLogger("hyperpool.local")

DEFAULT_COOLDOWN = 30.0
DEFAULT_INTERVAL = 0.25
FAST_TICK_SECONDS = 0.05


@dataclass
class SupervisorOptions:
    """How the supervisor sizes and runs pools (see the module docstring for the why)."""

    budget: Resources
    work_dir: Path
    cooldown: float = DEFAULT_COOLDOWN
    interval: float = DEFAULT_INTERVAL
    log_dir: Path | None = None
    worker_loglevel: str = "INFO"
    max_starting: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    # None: worker processes; else e.g. a ContainerRuntime (local/containers.py), whose
    # start(config, settings=, work_dir=, loglevel=) returns a worker of the same interface.
    runtime: Any = None


Listener = Callable[[dict[str, Any]], None]


def _forget_metrics(pid: int) -> None:
    """Drop an exited worker's live gauges when its metrics are shared (``pools up``)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from hyperpool.metrics import mark_process_dead

        mark_process_dead(pid)


class Supervisor:
    """Autoscales local worker pools; see the module docstring."""

    def __init__(self, settings: Settings, pools: Sequence[PoolConfig],
                 options: SupervisorOptions, *, probe: QueueProbe | None = None,
                 listeners: Sequence[Listener] = (),
                 upcoming: Callable[[], dict[str, int]] | None = None):
        self.settings = settings
        self.options = options
        self.pools = [Pool(config) for config in pools]
        self.probe = probe or QueueProbe(settings, [p.queue for p in pools])
        self.listeners = list(listeners)
        # Look-ahead demand per queue (hyperpool.engine.upcoming.UpcomingReader).
        self.upcoming = upcoming
        self._wake = threading.Event()
        self.started_at = time.time()
        self._stop = threading.Event()
        self._force = threading.Event()
        self._thread: threading.Thread | None = None
        self._drain_timeout: float | None = None
        self.error: BaseException | None = None
        self.check_budget()

    # -- set-up ---------------------------------------------------------------------------
    def check_budget(self) -> None:
        """Refuse pools of which not even one worker fits (their tasks would wait forever)."""
        for warning in check_fit([pool.config for pool in self.pools], self.options.budget):
            log.warning("%s", warning)

    # -- the reconcile loop ---------------------------------------------------------------
    def _reap(self, now: float) -> None:
        for pool in self.pools:
            for worker in list(pool.workers):
                code = worker.poll()
                if code is None:
                    continue
                pool.workers.remove(worker)
                _forget_metrics(worker.pid)
                if worker.draining:
                    log.debug("pool %s: worker %d stopped (exit %s)", pool.config.name,
                              worker.pid, code)
                    continue
                delay = pool.crashed(now, worker.age(now))
                note, tail = worker.exit_note, worker.exit_log
                pool.oom_kills += worker.oom_killed
                pool.last_exit = f"exit code {code}" + (f" ({note})" if note else "")
                where = f"; see {worker.log_path}" if worker.log_path else ""
                log.warning("pool %s: worker %d exited unexpectedly with code %s%s%s; replacing "
                            "it%s%s", pool.config.name, worker.pid, code,
                            f" ({note})" if note else "", where, f" in {delay:g}s" if delay else "",
                            f"; its last log lines:\n{tail}" if tail else "")

    def _used(self) -> Resources:
        """Budget held by workers: all but draining ones known to be idle."""
        used = NOTHING
        for pool in self.pools:
            for worker in pool.workers:
                if worker.draining and worker.busy is False:
                    continue
                used = used + pool.config.request
        return used

    def _measure(self, now: float) -> None:
        refresh_busy([w for p in self.pools for w in p.workers])
        # Announcements first: the engine publishes a stage's messages before it announces the
        # next stage, so queues sampled after this read hold every message announced before
        # it. Sampled first, a pool's new message could be missed while the next stage's
        # announcement was seen, and the warm replica took the budget the message needed.
        upcoming = self.upcoming() if self.upcoming is not None else {}
        depths = self.probe.sample()
        demands = []
        for pool in self.pools:
            pool.depth = depths.get(pool.config.queue)
            pool.upcoming = upcoming.get(pool.config.queue, 0) if pool.config.look_ahead else 0
            pool.backlog = 0
            if pool.depth is None:
                continue
            # Never ready alone: unacked (stale up to the stats interval) floored by the
            # workers seen running a task right now.
            depth = pool.depth.ready + max(pool.depth.unacked, pool.busy)
            pool.backlog = depth
            demands.append(PoolDemand(pool.config.name, depth, pool.config.max_replicas,
                                      pool.config.min_replicas,
                                      pool.config.request.as_mapping(),
                                      concurrency=pool.config.concurrency,
                                      upcoming=pool.upcoming))
        desired = desired_replicas(demands, self.options.budget.as_mapping())
        for pool in self.pools:
            # An unmeasured queue keeps its pool as it is until the broker answers again.
            pool.desired = desired.get(pool.config.name, len(pool.active))
            pool.window.append((now, pool.desired))

    def tick(self) -> None:
        """One reconcile pass (public for tests and benchmarks)."""
        now = time.monotonic()
        self._reap(now)
        self._measure(now)
        budget = self.options.budget
        used = self._used()
        # Only waiting work presses: a pool that wants a worker for announced work alone
        # (look-ahead) must not make another pool release its workers. Such a release stopped a
        # worker that had just taken its message, between the broker's unacked statistics and
        # its command's start (both read 0 then).
        pressure = any(
            pool.desired > len(pool.active) and now >= pool.not_before and pool.backlog > 0
            and not (used + pool.config.request).fits_in(budget)
            for pool in self.pools)
        for pool in self.pools:
            held = pool.held(now, self.options.cooldown)
            if pressure and held > pool.desired:
                # Released for another pool: forget the higher past, or the next tick without
                # pressure would take the budget back (flapping).
                pool.window.clear()
                pool.window.append((now, pool.desired))
                held = pool.desired
            pool.target = max(pool.config.min_replicas, held)
            self._scale_down(pool)
        self._scale_up(now)
        self._notify()

    def _scale_down(self, pool: Pool) -> None:
        active = pool.active
        surplus = len(active) - pool.target
        if surplus <= 0:
            return
        victims = pool.victims(surplus)
        log.info("pool %s: %d -> %d workers (depth %s); warm shutdown of %s", pool.config.name,
                 len(active), pool.target, self._depth_text(pool),
                 ", ".join(str(w.pid) for w in victims))
        for worker in victims:
            worker.stop()

    def _starting(self, now: float) -> int:
        return sum(pool.starting(now) for pool in self.pools)

    def _scale_up(self, now: float) -> None:
        budget = self.options.budget
        used = self._used()
        before = {pool.config.name: len(pool.active) for pool in self.pools}
        pending = [p for p in self.pools if len(p.active) < p.target and now >= p.not_before]
        # Start at most a core's worth of workers at a time: eight Python processes importing
        # Celery at once on two cores delay the *first* task by ~2.4 s; in waves it starts in
        # well under a second and the last worker is ready about as soon.
        slots = self.options.max_starting - self._starting(now)
        for pool in self.pools:
            pool.limited = False
        while pending and slots > 0:
            for pool in list(pending):
                if slots <= 0:
                    break
                if not (used + pool.config.request).fits_in(budget):
                    pool.limited = True
                    pending.remove(pool)
                    continue
                slots -= 1
                pool.workers.append(self._launch(pool.config))
                used = used + pool.config.request
                if len(pool.active) >= pool.target:
                    pending.remove(pool)
        for pool in self.pools:
            started = len(pool.active) - before[pool.config.name]
            if started:
                log.info("pool %s: %d -> %d workers (depth %s, desired %d)%s",
                         pool.config.name, before[pool.config.name], len(pool.active),
                         self._depth_text(pool), pool.desired,
                         "; budget exhausted" if pool.limited else "")

    def _launch(self, config: PoolConfig) -> Any:
        if self.options.runtime is not None:
            return self.options.runtime.start(config, settings=self.settings,
                                              work_dir=self.options.work_dir,
                                              loglevel=self.options.worker_loglevel)
        return WorkerProcess.start(config.name, config.queue, settings=self.settings,
                                   work_dir=self.options.work_dir, log_dir=self.options.log_dir,
                                   loglevel=self.options.worker_loglevel,
                                   concurrency=config.concurrency)

    @staticmethod
    def _depth_text(pool: Pool) -> str:
        d = pool.depth
        return "unknown" if d is None else f"{d.depth}: {d.ready} ready, {d.unacked} unacked"

    # -- observers ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What ``hyperpool status`` shows: budget, and per pool depth, replicas, workers."""
        now = time.monotonic()
        pools = []
        for pool in self.pools:
            c, d = pool.config, pool.depth
            pools.append({
                "name": c.name, "task_type": c.task_type, "queue": c.queue, "source": c.source,
                "min_replicas": c.min_replicas, "max_replicas": c.max_replicas,
                "request": c.request.to_json(),
                "ready": d.ready if d else None, "unacked": d.unacked if d else None,
                "consumers": d.consumers if d else None, "depth": d.depth if d else None,
                "replicas": len(pool.active), "draining": len(pool.workers) - len(pool.active),
                "busy": pool.busy, "upcoming": pool.upcoming, "desired": pool.desired,
                "target": pool.target,
                "quota_limited": pool.limited, "restarts": pool.restarts,
                "last_exit": pool.last_exit, "oom_kills": pool.oom_kills,
                "workers": [w.describe(now) for w in pool.workers],
            })
        return {
            "namespace": self.settings.namespace, "work_dir": str(self.options.work_dir),
            "started": self.started_at, "updated": time.time(),
            "interval": self.options.interval, "cooldown": self.options.cooldown,
            "budget": self.options.budget.to_json(), "used": self._used().to_json(),
            "pools": pools,
        }

    def _notify(self) -> None:
        if not self.listeners:
            return
        snap = self.snapshot()
        for listener in self.listeners:
            try:
                listener(snap)
            except Exception:  # noqa: BLE001 - observers must not stop the pools
                log.exception("pool state listener failed")

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> Supervisor:
        """Declare the pool queues (fails fast if RabbitMQ is down), then run in a thread."""
        self.probe.declare()
        if self.options.runtime is None:
            template.warm_up()  # its imports overlap the first tick, not the first worker
        self._thread = threading.Thread(target=self._serve, name="hyperpool-pools", daemon=True)
        self._thread.start()
        return self

    def _next_wait(self) -> float:
        """Tick fast while workers are starting, so the next wave follows without delay."""
        now = time.monotonic()
        scaling = any(len(p.active) < p.target and now >= p.not_before for p in self.pools)
        if scaling or self._starting(now):
            return min(self.options.interval, FAST_TICK_SECONDS)
        return self.options.interval

    def _serve(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    self.tick()
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - e.g. fork failing under load
                    failures += 1
                    self.error = exc
                    if failures == 1:
                        log.exception("pool supervisor tick failed; retrying every second")
                self._wake.wait(1.0 if failures else self._next_wait())
                self._wake.clear()
        finally:
            self.drain(self._drain_timeout)
            self.probe.close()
            for listener in self.listeners:
                close = getattr(listener, "close", None)
                if close is not None:
                    close()

    def wake(self) -> None:
        """Tick now: work was published or announced (the engine of ``hyperpool run`` calls
        this, so a pool at zero starts its worker without waiting for the next tick)."""
        self._wake.set()

    def stop(self, *, drain_timeout: float | None = None, wait: bool = True) -> None:
        """Stop scaling and drain: SIGTERM every worker, wait for all (or ``drain_timeout``)."""
        self._drain_timeout = drain_timeout
        self._stop.set()
        self._wake.set()
        if wait:
            self.join()

    def force(self) -> None:
        """Kill the workers now (a second Ctrl-C); their running tasks are redelivered."""
        self._force.set()
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the supervisor thread; ``True`` when it has finished."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def drain(self, timeout: float | None = None, poll: float = 0.05) -> bool:
        """Warm-stop every worker and wait for them; kill the rest after ``timeout`` or force.

        Returns ``True`` when every worker exited on its own.
        """
        workers = [w for p in self.pools for w in p.workers]
        if workers:
            log.info("draining %d worker(s): running tasks finish first", len(workers))
        for worker in workers:
            worker.stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        clean = True
        while any(w.poll() is None for w in workers):
            if self._force.is_set() or (deadline is not None and time.monotonic() > deadline):
                alive = [w for w in workers if w.poll() is None]
                log.warning("killing %d worker(s); their tasks will be redelivered", len(alive))
                for worker in alive:
                    worker.kill()
                clean = False
                break
            time.sleep(poll)
        for worker in workers:
            worker.proc.wait()
            _forget_metrics(worker.pid)
        for pool in self.pools:
            pool.workers.clear()
        self._notify()
        return clean
