"""The supervisor's reconcile rules, with scripted queue depths, fake workers and a fake clock.

The integration tests run real workers on the real broker; these pin down the decisions
themselves (cooldown window, budget admission, rebalancing, crash back-off, start-up waves)
without waiting for processes.
"""

from __future__ import annotations

import dataclasses
import itertools
from decimal import Decimal
from pathlib import Path

import pytest

from hyperpool.errors import ConfigError
from hyperpool.local import supervisor as supervisor_module
from hyperpool.local.budget import Resources
from hyperpool.local.manifests import PoolConfig
from hyperpool.local.probe import QueueDepth
from hyperpool.local.supervisor import Supervisor, SupervisorOptions
from hyperpool.settings import Settings

HALF = Resources(Decimal("0.5"), Decimal(2**28))
_pids = itertools.count(1000)


class Clock:
    """Stands in for the ``time`` module inside hyperpool.local.supervisor only."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1.7e9 + self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeWorker:
    """Behaves like WorkerProcess: warm stop exits at once when idle, after the task if busy."""

    clock: Clock
    oom_killed = False  # what hyperpool.local.workers.Worker says of an exit
    exit_note = ""
    exit_log = ""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.pid = next(_pids)
        self.started = self.clock.now
        self.draining_since: float | None = None
        self.busy: bool | None = False
        self._running: int | None = None
        self.exit_code: int | None = None
        self.log_path = None
        self.signals: list[str] = []

    @classmethod
    def start(cls, pool: str, queue: str, **_kw: object) -> FakeWorker:
        worker = cls(pool)
        FakeWorker.started_log.append(worker)
        return worker

    started_log: list[FakeWorker] = []

    @property
    def draining(self) -> bool:
        return self.draining_since is not None

    def poll(self) -> int | None:
        return self.exit_code

    @property
    def running(self) -> int:
        """As refresh_busy derives them: one task per busy worker unless a test says more."""
        return self._running if self._running is not None else int(bool(self.busy))

    @running.setter
    def running(self, value: int) -> None:
        self._running = value

    def age(self, now: float | None = None) -> float:
        return (self.clock.now if now is None else now) - self.started

    def stop(self) -> None:
        self.signals.append("TERM")
        self.draining_since = self.clock.now
        if self.busy is False:
            self.exit_code = 0

    def kill(self) -> None:
        self.signals.append("KILL")
        self.exit_code = -9

    def describe(self, now: float) -> dict[str, object]:
        return {"pid": self.pid}


class ScriptedProbe:
    def __init__(self) -> None:
        self.depths: dict[str, QueueDepth | None] = {}
        self.queues: list[str] = []

    def set(self, queue: str, ready: int, unacked: int = 0, consumers: int = 0) -> None:
        self.depths[queue] = QueueDepth(ready, unacked, consumers)

    def sample(self) -> dict[str, QueueDepth | None]:
        return dict(self.depths)

    def declare(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def env(monkeypatch):
    clock = Clock()
    FakeWorker.clock = clock
    FakeWorker.started_log = []
    monkeypatch.setattr(supervisor_module, "time", clock)
    monkeypatch.setattr(supervisor_module, "WorkerProcess", FakeWorker)
    monkeypatch.setattr(supervisor_module, "refresh_busy", lambda workers: None)
    return clock


def make(pools, *, cpu="2", cooldown=5.0, max_starting=100):
    probe = ScriptedProbe()
    configs = [PoolConfig(name=name, task_type=name, queue=f"ns.{name}", min_replicas=mn,
                          max_replicas=mx, request=HALF, source=f"test {name}")
               for name, mn, mx in pools]
    options = SupervisorOptions(budget=Resources(Decimal(cpu), Decimal(2**34)),
                                work_dir=Path("."), cooldown=cooldown,
                                max_starting=max_starting)
    sup = Supervisor(Settings(), configs, options, probe=probe)  # type: ignore[arg-type]
    for name, _mn, _mx in pools:
        probe.set(f"ns.{name}", 0)
    return sup, probe


def replicas(sup: Supervisor) -> dict[str, int]:
    return {p.config.name: len(p.active) for p in sup.pools}


def used_cpu(sup: Supervisor) -> Decimal:
    return sum((HALF.cpu for p in sup.pools for w in p.workers
                if not (w.draining and w.busy is False)), Decimal(0))


def test_scales_up_at_once_and_down_only_after_the_cooldown(env):
    sup, probe = make([("a", 0, 10)], cooldown=5.0)
    sup.tick()
    assert replicas(sup) == {"a": 0}
    probe.set("ns.a", 3)
    sup.tick()
    assert replicas(sup) == {"a": 3}  # same tick: min(max, depth, fit 4)
    for worker in sup.pools[0].workers:
        worker.busy = True
    probe.set("ns.a", 0, unacked=3)  # all taken, still running: no scale-down
    env.now += 10
    sup.tick()
    assert replicas(sup) == {"a": 3}
    probe.set("ns.a", 0, unacked=1)  # two finished
    for worker in sup.pools[0].workers[1:]:
        worker.busy = False
    sup.tick()
    env.now += 4.9
    sup.tick()
    assert replicas(sup) == {"a": 3}, "within the cooldown nothing stops"
    env.now += 0.2
    sup.tick()
    assert replicas(sup) == {"a": 1}
    stopped = [w for w in FakeWorker.started_log if w.signals]
    assert all(w.signals == ["TERM"] and not w.busy for w in stopped), "idle ones, warm"
    probe.set("ns.a", 0)
    sup.pools[0].workers[0].busy = False
    sup.tick()
    env.now += 5.1
    sup.tick()
    assert replicas(sup) == {"a": 0}
    assert sup.pools[0].workers == [] or all(w.draining for w in sup.pools[0].workers)


def test_min_replicas_is_kept_and_max_caps(env):
    sup, probe = make([("a", 2, 3)], cpu="8")
    sup.tick()
    assert replicas(sup) == {"a": 2}
    probe.set("ns.a", 50)
    sup.tick()
    assert replicas(sup) == {"a": 3}
    probe.set("ns.a", 0)
    env.now += 60
    sup.tick()
    sup.tick()
    assert replicas(sup) == {"a": 2}


def test_budget_is_a_hard_limit_and_shared_by_depth(env):
    sup, probe = make([("a", 0, 50), ("b", 0, 50), ("c", 0, 50)], cpu="2")  # 4 slots
    probe.set("ns.a", 10)
    probe.set("ns.b", 10)
    probe.set("ns.c", 10)
    sup.tick()  # formula: ceil(4/3) = 2 each = 6 > 4 slots; admission stops at 4
    counts = replicas(sup)
    assert sum(counts.values()) == 4 and used_cpu(sup) <= 2
    assert sorted(counts.values()) == [1, 1, 2]  # round-robin, not first-come
    assert any(p.limited for p in sup.pools)


def test_idle_surplus_is_released_at_once_when_another_pool_needs_the_budget(env):
    sup, probe = make([("a", 0, 50), ("b", 0, 50)], cpu="2", cooldown=30)
    probe.set("ns.a", 8)
    sup.tick()
    assert replicas(sup) == {"a": 4, "b": 0}
    a_workers = list(sup.pools[0].workers)
    a_workers[0].busy = True  # one still finishing a task
    probe.set("ns.a", 0, unacked=1)
    probe.set("ns.b", 6)
    sup.tick()
    # a's window would hold 4 for 30 s, but b cannot get a worker: a drops to its demand.
    assert replicas(sup)["a"] == 1
    assert a_workers[0].signals == [], "the busy worker is the one kept"
    sup.tick()
    assert replicas(sup)["b"] == 3 and used_cpu(sup) <= 2


def test_busy_draining_workers_keep_their_budget_until_they_exit(env):
    sup, probe = make([("a", 0, 50), ("b", 0, 50)], cpu="1", cooldown=0)  # 2 slots
    probe.set("ns.a", 2)
    sup.tick()
    for worker in sup.pools[0].workers:
        worker.busy = None  # unknown (a stub task has no process to see)
    probe.set("ns.a", 0)  # stale stats: looks empty while both still run
    probe.set("ns.b", 2)
    sup.tick()
    assert all(w.draining for w in sup.pools[0].workers), "scale-down is a warm stop"
    assert all(w.exit_code is None for w in sup.pools[0].workers), "running ones go on"
    assert replicas(sup)["b"] == 0, "no budget while the draining workers run tasks"
    for worker in sup.pools[0].workers:
        worker.busy = False
        worker.exit_code = 0
    sup.tick()
    assert replicas(sup) == {"a": 0, "b": 2}
    env.now += 1
    sup.tick()
    assert replicas(sup) == {"a": 0, "b": 2}, "a released its share; it does not take it back"


def test_crashed_workers_are_replaced_with_back_off(env, caplog):
    sup, probe = make([("a", 1, 1)])
    sup.tick()
    first = sup.pools[0].workers[0]
    first.exit_code = 1
    env.now += 1
    sup.tick()
    assert sup.pools[0].restarts == 1 and replicas(sup) == {"a": 0}, "waits 0.5 s"
    assert "exited unexpectedly with code 1" in caplog.text
    env.now += 0.6
    sup.tick()
    assert replicas(sup) == {"a": 1}
    second = sup.pools[0].workers[0]
    second.exit_code = 1
    env.now += 0.5
    sup.tick()
    env.now += 0.6
    sup.tick()
    assert replicas(sup) == {"a": 0}, "second young crash: 1 s"
    env.now += 0.5
    sup.tick()
    assert replicas(sup) == {"a": 1} and sup.pools[0].restarts == 2


def test_an_unmeasurable_queue_holds_its_pool(env):
    sup, probe = make([("a", 0, 10)], cooldown=0)
    probe.set("ns.a", 2)
    sup.tick()
    probe.depths["ns.a"] = None  # broker unreachable this tick
    env.now += 100
    sup.tick()
    assert replicas(sup) == {"a": 2}


def test_workers_start_in_waves(env):
    sup, probe = make([("a", 0, 8)], cpu="8", max_starting=2)
    probe.set("ns.a", 8)
    sup.tick()
    assert replicas(sup) == {"a": 2}
    sup.tick()
    assert replicas(sup) == {"a": 2}, "the first wave is not consuming yet"
    probe.set("ns.a", 6, consumers=2)
    sup.tick()
    assert replicas(sup) == {"a": 4}
    env.now += 11  # a worker that never shows up as consumer stops blocking the waves
    sup.tick()
    assert replicas(sup) == {"a": 6}


def test_a_pool_whose_single_worker_exceeds_the_budget_is_refused(env):
    with pytest.raises(ConfigError, match=r"test a: pool 'a': one worker requests cpu 500m.*"
                                          r"budget is cpu 400m"):
        make([("a", 0, 1)], cpu="0.4")


def test_drain_stops_everyone_warm_and_kills_after_the_timeout(env):
    sup, probe = make([("a", 0, 10)])
    probe.set("ns.a", 3)
    sup.tick()
    workers = list(sup.pools[0].workers)
    workers[0].busy = True
    for worker in workers:
        worker.proc = type("P", (), {"wait": lambda self: 0})()
    assert sup.drain(timeout=1.0) is False  # the busy one outlived the timeout
    assert workers[0].signals == ["TERM", "KILL"]
    assert [w.signals for w in workers[1:]] == [["TERM"], ["TERM"]]
    assert sup.pools[0].workers == []


def test_a_pool_with_concurrency_starts_one_worker_per_that_many_tasks(env, monkeypatch):
    """concurrency 4 (a WorkerPool's spec.concurrency): 10 waiting tasks -> 3 workers, each
    started with -c 4; running tasks count per task, not per worker."""
    sup, probe = make([("a", 0, 10)], cpu="8")
    sup.pools[0].config = dataclasses.replace(sup.pools[0].config, concurrency=4)
    calls = []
    real_start = FakeWorker.start.__func__

    def start(cls, pool, queue, **kw):
        calls.append(kw.get("concurrency"))
        return real_start(cls, pool, queue, **kw)

    monkeypatch.setattr(FakeWorker, "start", classmethod(start))
    probe.set("ns.a", 10)
    sup.tick()
    assert replicas(sup) == {"a": 3} and calls == [4, 4, 4]
    for worker in sup.pools[0].workers:
        worker.busy, worker.running = True, 4
    assert sup.pools[0].busy == 12
    probe.set("ns.a", 0, unacked=0)  # counts lag; the workers' own 12 tasks keep 3 workers
    sup.tick()
    assert replicas(sup) == {"a": 3}


def test_announced_work_warms_from_leftover_budget_and_never_presses(env):
    sup, probe = make([("a", 0, 50), ("b", 0, 50)], cpu="1", cooldown=30)  # two workers
    sup.upcoming = lambda: {"ns.b": 3}
    probe.set("ns.a", 1)
    sup.tick()
    assert replicas(sup) == {"a": 1, "b": 1}  # the budget left over warms b before its stage
    warm = sup.pools[1].workers[0]
    probe.set("ns.a", 4)
    sup.tick()
    sup.tick()
    # Waiting work presses: b's idle warm worker yields its budget to a at once.
    assert replicas(sup) == {"a": 2, "b": 0} and warm.signals
    # a's workers took their messages; the broker's statistics and the busy probe lag, so a
    # reads as idle with nothing waiting, while b's announcement wants a worker.
    probe.set("ns.a", 0)
    sup.tick()
    # Announced work alone never presses: a's window keeps both workers (one of them may
    # be running a task nobody has seen yet), and b waits for budget to come free.
    assert replicas(sup) == {"a": 2, "b": 0}
    assert all(w.signals == [] for w in sup.pools[0].workers)


def test_switched_off_pools_ignore_announced_work(env):
    sup, probe = make([("b", 0, 50)], cpu="2", cooldown=30)
    sup.pools[0].config = dataclasses.replace(sup.pools[0].config, look_ahead=False)
    sup.upcoming = lambda: {"ns.b": 5}
    sup.tick()
    assert replicas(sup) == {"b": 0} and sup.pools[0].upcoming == 0
