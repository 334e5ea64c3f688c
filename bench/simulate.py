"""Reactive vs look-ahead autoscaling of Montage's pools, simulated: ``python -m bench.simulate``.

Issue 18's last goal: would pools that scale on what the engine *knows is coming* finish the
real Montage DAGs sooner than pools that scale on their queues, given the delays of the scaling
chain (Prometheus scrape, rule evaluation, KEDA polling, HPA sync and stabilisation, pod start)?
Measuring that on a cluster for every delay setting is slow and noisy; a discrete-event
simulation of the same DAGs (:mod:`bench.simulate_model`), pools and scaling formula
(:func:`hyperpool.scaling.desired_replicas`, called with the simulated numbers) through the
chain (:mod:`bench.simulate_chains`) answers it in seconds, and is checked against this
project's measured local runs first (:mod:`bench.simulate_validate`).

Policies, one pool per task type as the project runs them:

* **reactive**: demand = ready + running tasks of the pool's queue (what RabbitMQ reports);
* **look-ahead**: demand also counts the pool's *upcoming* tasks, those whose predecessors have
  all been dispatched (the engine would export the count as a metric beside the queue's).

Writes docs/simulation.md and docs/simulation-*.png; about 20 s on 2 cores. Results are means
over ``SEEDS`` runs that differ in the phases of the chain's periodic loops.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache
from pathlib import Path

from bench.common import REPO, workflow_file
from bench.simulate_chains import KubernetesChain, KubernetesRuntime
from bench.simulate_core import Result, Simulation, StaticPools
from bench.simulate_model import (
    Budget,
    PoolConf,
    SimDag,
    from_dag,
    load_dag,
    montage_durations,
    timing_fields,
)

WORKFLOWS = ("legacy-montage-1.0-469", "legacy-montage-2.0-1482")
POLICIES = {"reactive": False, "look-ahead": True}
SEEDS = 10
BUDGET = Budget(cpu=Decimal(100), pods=200)  # 200 pods of 0.5 cores: the caps, not the quota, bind
POOL = PoolConf()  # maxReplicaCount 50, concurrency 1, 0.5 cores
DOCS = REPO / "docs"

BASE = KubernetesChain()
FAST = dict(broker_stats=0.5, scrape_broker=5.0, scrape_engine=5.0, rule_eval=5.0,
            keda_polling=5.0)


@dataclass(frozen=True)
class Scenario:
    name: str
    chain: KubernetesChain
    budget: Budget = BUDGET
    note: str = ""


SCENARIOS = (
    Scenario("defaults", BASE, note="this project's manifests; RabbitMQ scraped at "
             "prometheus-operator's default 30 s"),
    Scenario("fast chain", replace(BASE, **FAST),
             note="scrape, rule and KEDA polling 5 s; queue counters every 0.5 s"),
    Scenario("slow: component defaults", replace(
        BASE, scrape_engine=30.0, rule_eval=30.0, keda_polling=30.0, cooldown=300.0),
             note="prometheus-operator 30 s scrape and evaluation, KEDA 30 s polling, 300 s "
             "cooldown"),
    Scenario("pod start 2 s", replace(BASE, pod_start=2.0)),
    Scenario("pod start 10 s", replace(BASE, pod_start=10.0)),
    Scenario("HPA scale-up +50 pods/15 s", replace(BASE, hpa_up_pods=50),
             note="defaults with a ScaledObject `behavior.scaleUp` override"),
    Scenario("tight budget: 32 cores", BASE, Budget(cpu=Decimal(32), pods=200),
             note="defaults with 64 pods for all pools"),
)


@dataclass
class Outcome:
    workflow: str
    scenario: str
    policy: str
    makespans: list[float]
    worker_hours: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.makespans)


@dataclass
class Shape:
    """What bounds a workflow's makespan whatever the autoscaler does."""

    workflow: str
    tasks: int
    durations: dict[str, float]
    counts: dict[str, int]
    critical_path: float
    warm: float  # every pool warm at maxReplicaCount from the start (no chain, no quota)
    timing_fields: list[str]  # keys of the file that could hold runtimes


@cache
def sim_dag(name: str) -> SimDag:
    dag = load_dag(str(workflow_file(name)))
    return from_dag(dag, montage_durations(dag))


def shape(name: str) -> Shape:
    dag = load_dag(str(workflow_file(name)))
    sdag = sim_dag(name)
    counts: dict[str, int] = {}
    for task in sdag.tasks:
        counts[task.task_type] = counts.get(task.task_type, 0) + 1
    pools = dict.fromkeys(sdag.pool_types, POOL)
    warm = Simulation(sdag, pools, StaticPools(dict.fromkeys(pools, POOL.max_replicas))).run()
    return Shape(name, len(sdag.tasks), montage_durations(dag), counts, sdag.critical_path(),
                 warm.makespan, timing_fields(str(workflow_file(name))))


def simulate(name: str, scenario: Scenario, lookahead: bool, seed: int,
             record: bool = False) -> Result:
    dag = sim_dag(name)
    runtime = KubernetesRuntime(scenario.chain, scenario.budget)
    sim = Simulation(dag, dict.fromkeys(dag.pool_types, POOL), runtime, lookahead=lookahead,
                     seed=seed, record=record)
    return sim.run()


def _one(job: tuple[str, int, str, int]) -> tuple[tuple[str, int, str], float, float]:
    name, index, policy, seed = job
    result = simulate(name, SCENARIOS[index], POLICIES[policy], seed)
    return (name, index, policy), result.makespan, result.worker_seconds / 3600


def run_all(seeds: int, processes: int) -> list[Outcome]:
    jobs = [(name, i, policy, seed) for name in WORKFLOWS for i in range(len(SCENARIOS))
            for policy in POLICIES for seed in range(seeds)]
    found: dict[tuple[str, int, str], Outcome] = {}
    with ProcessPoolExecutor(max_workers=processes) as pool:
        for (name, index, policy), makespan, hours in pool.map(_one, jobs, chunksize=8):
            key = (name, index, policy)
            out = found.setdefault(key, Outcome(name, SCENARIOS[index].name, policy, [], []))
            out.makespans.append(makespan)
            out.worker_hours.append(hours)
    return list(found.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--out", type=Path, default=DOCS / "simulation.md")
    args = parser.parse_args()
    from bench import simulate_report
    from bench.simulate_validate import validate

    t0 = time.monotonic()
    shapes = [shape(name) for name in WORKFLOWS]
    outcomes = run_all(args.seeds, max(1, min(2, os.cpu_count() or 1)))
    timelines = {policy: simulate(WORKFLOWS[0], SCENARIOS[0], lookahead, 0, record=True)
                 for policy, lookahead in POLICIES.items()}
    calibration, checks = validate()
    simulate_report.write(args.out, shapes=shapes, outcomes=outcomes, timelines=timelines,
                          calibration=calibration, checks=checks, seeds=args.seeds,
                          elapsed=time.monotonic() - t0)
    print(f"bench.simulate: wrote {args.out} in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
