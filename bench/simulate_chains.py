"""The two autoscalers the simulated pools run under, each seeing only what the real one sees.

**Kubernetes** (:class:`KubernetesRuntime`): queue depth reaches the Deployment through a chain
of independent periodic loops, each with its own phase:

1. RabbitMQ refreshes its queue metrics every ``broker_stats`` s (``collect_statistics_interval``
   / quorum-queue tick, 5 s by default; hyperpool/local/probe.py measured 4.9 s);
2. Prometheus scrapes them every ``scrape_broker`` s (prometheus-operator's default scrape
   interval is 30 s; the engine's own metrics, the look-ahead's input, come through our
   PodMonitor every ``scrape_engine`` = 15 s, k8s/monitoring/podmonitor.yaml);
3. the PrometheusRule evaluates :func:`hyperpool.scaling.desired_replicas` every ``rule_eval``
   s (15 s, ``EVALUATION_INTERVAL`` in hyperpool/controller/rules.py);
4. KEDA polls the recorded value every ``keda_polling`` s (15 s, ``DEFAULT_POLLING_INTERVAL``
   in hyperpool/controller/params.py; KEDA's default is 30 s) and does 0 -> 1 itself, and
   1 -> 0 once the value was 0 for ``cooldown`` s (ours: ``max(300, terminationGrace 600)`` =
   600 s, PoolParams.cooldown; KEDA's default 300 s);
5. the HPA (kube-controller-manager ``--horizontal-pod-autoscaler-sync-period``, 15 s) does
   1 <-> N: it asks KEDA, which queries Prometheus then (``useCachedMetrics`` defaults to
   false), skips changes within its 10 % tolerance, scales up at most by max(+4 pods, +100 %)
   per 15 s and down to the highest recommendation of the last 300 s (the default
   ``behavior``, as KEDA's ScaledObject CRD documents it);
6. the ReplicaSet creates pods, which the ResourceQuota admits only while they fit (pods still
   terminating count), and which start consuming ``pod_start`` s later. It deletes not-ready
   pods first, then the youngest: it does not know which pods are idle.

Simplification: a pod creation the quota refused is retried as soon as a pod anywhere in the
namespace is gone (the ReplicaSet controller really retries with a growing back-off, so this
is optimistic for whichever policy hits the quota).

**Local** (:class:`LocalRuntime`): hyperpool/local/supervisor.py's loop, rule for rule: a tick
every 0.25 s (0.05 s while workers start); depth = ready now + max(unacked, busy now), where
unacked is read every 0.5 s from RabbitMQ's Prometheus endpoint, whose quorum-queue counters
refresh every 500 ms (``quorum_tick_interval``, configs/rabbitmq-advanced.config); the same
formula with the machine as budget; as target the highest desired count of the last
``cooldown`` s, unless another pool is short of budget (then the surplus is released at once);
idle workers stopped first; at most ``max_starting`` workers starting at a time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from functools import partial

from bench.simulate_core import STARTING, STOPPING, UP, PoolRun, Simulation, Worker
from bench.simulate_model import Budget, requests
from hyperpool.controller.params import DEFAULT_POLLING_INTERVAL, DEFAULT_TERMINATION_GRACE
from hyperpool.controller.rules import EVALUATION_INTERVAL
from hyperpool.local.probe import MANAGEMENT_EVERY
from hyperpool.local.supervisor import DEFAULT_COOLDOWN, DEFAULT_INTERVAL, FAST_TICK_SECONDS
from hyperpool.scaling import PoolDemand, desired_replicas, quota_max_replicas

OUR_RULE_INTERVAL = float(EVALUATION_INTERVAL.removesuffix("s"))
OUR_COOLDOWN = float(max(300, DEFAULT_TERMINATION_GRACE))  # PoolParams.cooldown


@dataclass(frozen=True)
class KubernetesChain:
    """Delays of the scaling chain on Kubernetes (defaults: this project's manifests)."""

    broker_stats: float = 5.0
    scrape_broker: float = 30.0
    scrape_engine: float = 15.0
    rule_eval: float = OUR_RULE_INTERVAL
    keda_polling: float = float(DEFAULT_POLLING_INTERVAL)
    hpa_sync: float = 15.0
    hpa_tolerance: float = 0.1
    hpa_up_pods: int = 4
    hpa_up_percent: int = 100
    hpa_up_period: float = 15.0
    stabilization: float = 300.0
    cooldown: float = OUR_COOLDOWN
    pod_start: float = 5.0
    pod_stop: float = 2.0


def _demands(sim: Simulation, depth: dict[str, int]) -> list[PoolDemand]:
    return [PoolDemand(name, depth[name], pool.conf.max_replicas, 0, requests(pool.conf),
                       pool.conf.concurrency) for name, pool in sim.pools.items()]


class KubernetesRuntime:
    """Prometheus, the PrometheusRule, KEDA, the HPA and the ReplicaSet of every pool."""

    def __init__(self, chain: KubernetesChain, budget: Budget):
        self.chain = chain
        self.budget = budget

    def attach(self, sim: Simulation) -> None:
        self.sim = sim
        names = list(sim.pools)
        zero = dict.fromkeys(names, 0)
        self.stats, self.scraped, self.upcoming = dict(zero), dict(zero), dict(zero)
        self.recorded, self.replicas, self.pending = dict(zero), dict(zero), dict(zero)
        self.history: dict[str, deque[tuple[float, int]]] = {n: deque() for n in names}
        self.changes: dict[str, deque[tuple[float, int]]] = {n: deque() for n in names}
        self.last_active = dict.fromkeys(names, -math.inf)
        self.scaler_max = {
            n: max(1, quota_max_replicas(p.conf.max_replicas, requests(p.conf),
                                         self.budget.mapping()))
            for n, p in sim.pools.items()}
        c = self.chain
        sim.every(c.broker_stats, self._broker_stats)
        sim.every(c.scrape_broker, self._scrape_broker)
        sim.every(c.scrape_engine, self._scrape_engine)
        sim.every(c.rule_eval, self._evaluate)
        for name in names:
            sim.every(c.keda_polling, partial(self._keda_poll, name))
            sim.every(c.hpa_sync, partial(self._hpa_sync, name))

    # -- the metric chain -----------------------------------------------------------------
    def _broker_stats(self) -> None:
        self.stats = {n: p.depth for n, p in self.sim.pools.items()}

    def _scrape_broker(self) -> None:
        self.scraped = dict(self.stats)

    def _scrape_engine(self) -> None:
        self.upcoming = {n: p.upcoming for n, p in self.sim.pools.items()}

    def _evaluate(self) -> None:
        extra = self.upcoming if self.sim.lookahead else dict.fromkeys(self.scraped, 0)
        depth = {n: self.scraped[n] + extra[n] for n in self.scraped}
        self.recorded = desired_replicas(_demands(self.sim, depth), self.budget.mapping())

    # -- KEDA and the HPA -----------------------------------------------------------------
    def _keda_poll(self, name: str) -> None:
        now = self.sim.now
        if self.recorded[name] > 0:
            self.last_active[name] = now
            if self.replicas[name] == 0:
                self._scale(name, 1)
        elif self.replicas[name] > 0 and now - self.last_active[name] >= self.chain.cooldown:
            self.history[name].clear()
            self._scale(name, 0)

    def _hpa_sync(self, name: str) -> None:
        current = self.replicas[name]
        if current == 0:  # the HPA is inactive at zero replicas; KEDA activates
            return
        c, now = self.chain, self.sim.now
        metric = self.recorded[name]  # AverageValue target 1: desired = metric
        desired = current if abs(metric / current - 1) <= c.hpa_tolerance else metric
        desired = min(max(desired, 1), self.scaler_max[name])
        history = self.history[name]
        while history and history[0][0] < now - c.stabilization:
            history.popleft()
        history.append((now, desired))
        target = max(current, desired) if desired > current else min(
            current, max(r for _, r in history))
        changes = self.changes[name]
        while changes and changes[0][0] <= now - c.hpa_up_period:
            changes.popleft()
        if target > current:
            start = current - sum(d for _, d in changes)
            limit = max(start + c.hpa_up_pods, start * (100 + c.hpa_up_percent) // 100)
            target = max(current, min(target, limit))
        if target != current:
            changes.append((now, target - current))  # the HPA's own scale events only
            self._scale(name, target)

    def _scale(self, name: str, replicas: int) -> None:
        self.replicas[name] = replicas
        pool = self.sim.pools[name]
        active = pool.active
        self.pending[name] = max(0, replicas - len(active))
        surplus = len(active) - replicas
        if surplus > 0:
            for worker in sorted(active, key=lambda w: (w.state == UP, -w.born))[:surplus]:
                self.sim.retire(worker, self.chain.pod_stop)
        self._create(pool)

    # -- the ReplicaSet and the ResourceQuota ---------------------------------------------
    def _create(self, pool: PoolRun) -> None:
        while self.pending[pool.name] > 0 and self._admits(pool):
            self.pending[pool.name] -= 1
            self.sim.launch(pool, self.chain.pod_start)

    def _admits(self, pool: PoolRun) -> bool:
        workers = [w for p in self.sim.pools.values() for w in p.workers]
        cpu = sum((w.pool.conf.cpu for w in workers), Decimal(0)) + pool.conf.cpu
        memory = sum((w.pool.conf.memory for w in workers), Decimal(0)) + pool.conf.memory
        return self.budget.fits(cpu, len(workers) + 1, memory)

    def worker_gone(self, sim: Simulation, worker: Worker) -> None:
        for pool in sim.pools.values():
            if self.pending[pool.name]:
                self._create(pool)


@dataclass(frozen=True)
class LocalChain:
    """The local supervisor's timing (defaults: hyperpool/local; start/stop: measured)."""

    tick: float = DEFAULT_INTERVAL
    fast_tick: float = FAST_TICK_SECONDS
    unacked_refresh: float = MANAGEMENT_EVERY
    quorum_tick: float = 0.5  # configs/rabbitmq-advanced.config (RabbitMQ's default: 5 s)
    worker_start: float = 0.57
    worker_stop: float = 0.3
    cooldown: float = DEFAULT_COOLDOWN
    max_starting: int = 2  # SupervisorOptions.max_starting: the CPU count (2 here)


class LocalRuntime:
    """The local supervisor (hyperpool/local/supervisor.py) over the simulated pools."""

    def __init__(self, chain: LocalChain, budget: Budget):
        self.chain = chain
        self.budget = budget
        self.empty_at: float | None = None  # first tick after the run with no worker left

    def attach(self, sim: Simulation) -> None:
        self.sim = sim
        self.window: dict[str, deque[tuple[float, int]]] = {n: deque() for n in sim.pools}
        self.unacked = dict.fromkeys(sim.pools, 0)
        self.broker_unacked = dict.fromkeys(sim.pools, 0)
        self.target = dict.fromkeys(sim.pools, 0)
        self.stats_at = -math.inf
        sim.every(self.chain.quorum_tick, self._quorum_tick)
        sim.at(sim.rng.uniform(0, self.chain.tick), self._tick)

    def _quorum_tick(self) -> None:
        self.broker_unacked = {n: p.running for n, p in self.sim.pools.items()}

    def _used(self) -> tuple[Decimal, Decimal]:
        held = [w for p in self.sim.pools.values() for w in p.workers if w.state != STOPPING]
        return (sum((w.pool.conf.cpu for w in held), Decimal(0)),
                sum((w.pool.conf.memory for w in held), Decimal(0)))

    def _fits(self, used: tuple[Decimal, Decimal], pool: PoolRun) -> bool:
        return self.budget.fits(used[0] + pool.conf.cpu, 0, used[1] + pool.conf.memory)

    def _tick(self) -> None:
        sim, c, now = self.sim, self.chain, self.sim.now
        if sim.finished_at is not None and self.empty_at is None and not any(
                p.workers for p in sim.pools.values()):
            self.empty_at = now
        if now - self.stats_at >= c.unacked_refresh:  # QueueProbe._refresh_stats
            self.stats_at = now
            self.unacked = dict(self.broker_unacked)
        depth = {n: len(p.queue) + max(self.unacked[n], p.running)
                 + (p.upcoming if sim.lookahead else 0) for n, p in sim.pools.items()}
        desired = desired_replicas(_demands(sim, depth), self.budget.mapping())
        used = self._used()
        pressure = any(desired[n] > len(p.active) and not self._fits(used, p)
                       for n, p in sim.pools.items())
        for name, pool in sim.pools.items():
            window = self.window[name]
            window.append((now, desired[name]))
            while len(window) > 1 and window[0][0] < now - c.cooldown:
                window.popleft()
            held = max(d for _, d in window)
            if pressure and held > desired[name]:
                window.clear()
                window.append((now, desired[name]))
                held = desired[name]
            self.target[name] = held
            active = pool.active
            surplus = len(active) - held
            if surplus > 0:
                order = sorted(active, key=lambda w: (not (w.state == UP and w.busy == 0),
                                                      -w.born))
                for worker in order[:surplus]:
                    sim.retire(worker, c.worker_stop)
        self._scale_up()
        busy = any(len(p.active) < self.target[n] for n, p in sim.pools.items())
        sim.at(now + (c.fast_tick if busy or self._starting() else c.tick), self._tick)

    def _starting(self) -> int:
        return sum(w.state == STARTING for p in self.sim.pools.values() for w in p.workers)

    def _scale_up(self) -> None:
        used = self._used()
        pending = [p for n, p in self.sim.pools.items() if len(p.active) < self.target[n]]
        slots = self.chain.max_starting - self._starting()
        while pending and slots > 0:
            for pool in list(pending):
                if slots <= 0:
                    break
                if not self._fits(used, pool):
                    pending.remove(pool)
                    continue
                slots -= 1
                self.sim.launch(pool, self.chain.worker_start)
                used = (used[0] + pool.conf.cpu, used[1] + pool.conf.memory)
                if len(pool.active) >= self.target[pool.name]:
                    pending.remove(pool)

    def worker_gone(self, sim: Simulation, worker: Worker) -> None:
        """The supervisor reaps exited workers at its next tick; nothing to do at once."""
