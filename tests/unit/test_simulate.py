"""The pool simulation (bench/simulate*.py) on DAGs small enough to compute by hand.

Delays that are "zero" are 10 ms: the chain's loops are periodic events, so a period of 0
would never let time advance; makespans are then compared within a few loop periods.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from bench.simulate_chains import KubernetesChain, KubernetesRuntime, LocalChain, LocalRuntime
from bench.simulate_core import Simulation, StaticPools
from bench.simulate_model import (
    Budget,
    PoolConf,
    SimDag,
    SimTask,
    from_dag,
    load_dag,
    montage_durations,
    timing_fields,
)
from tests.reference import workflow_file

EPS = 0.01
ZERO = KubernetesChain(broker_stats=EPS, scrape_broker=EPS, scrape_engine=EPS, rule_eval=EPS,
                       keda_polling=EPS, hpa_sync=EPS, hpa_up_period=EPS, stabilization=0.0,
                       cooldown=0.0, pod_start=0.0, pod_stop=0.0)
AMPLE = Budget(cpu=Decimal(100), pods=200)
SLACK = 0.1  # a few 10 ms loop periods per stage


def dag(*spec: tuple[str, float, tuple[int, ...]]) -> SimDag:
    return SimDag("hand-made", [SimTask(i, t, deps, d, "pool")
                                for i, (t, d, deps) in enumerate(spec)])


CHAIN = dag(("a", 10, ()), ("b", 20, (0,)), ("c", 30, (1,)))  # critical path 60
FAN = dag(("root", 5, ()), *[("leaf", 10, (0,))] * 10)  # 10 leaves after one root
DIAMOND = dag(("a", 4, ()), ("b", 6, (0,)), ("b", 6, (0,)), ("b", 6, (0,)),
              ("c", 3, (1, 2, 3)))  # critical path 13


def pools(d: SimDag, **conf: int) -> dict[str, PoolConf]:
    return dict.fromkeys(d.pool_types, PoolConf(**conf))


def run_k8s(d: SimDag, chain: KubernetesChain = ZERO, *, lookahead: bool = False,
            seed: int = 0, budget: Budget = AMPLE, **conf: int) -> float:
    runtime = KubernetesRuntime(chain, budget)
    return Simulation(d, pools(d, **conf), runtime, lookahead=lookahead, seed=seed).run().makespan


def test_critical_paths_by_hand():
    assert CHAIN.critical_path() == 60
    assert DIAMOND.critical_path() == 13
    assert FAN.critical_path() == 15


@pytest.mark.parametrize("d", [CHAIN, DIAMOND, FAN], ids=["chain", "diamond", "fan-out"])
def test_warm_pools_wide_enough_give_the_critical_path(d):
    sim = Simulation(d, pools(d), StaticPools(dict.fromkeys(d.pool_types, 10)))
    assert sim.run().makespan == pytest.approx(d.critical_path())


def test_fan_out_with_a_cap_runs_in_waves():
    # 10 leaves of 10 s on 3 workers: 4 waves after the 5 s root.
    sim = Simulation(FAN, pools(FAN), StaticPools({"root": 1, "leaf": 3}))
    assert sim.run().makespan == pytest.approx(5 + 4 * 10)


def test_fan_out_capped_by_max_replicas_through_the_chain():
    assert run_k8s(FAN, max_replicas=3) == pytest.approx(45, abs=SLACK)


def test_fan_out_capped_by_the_namespace_budget():
    # 1.5 cores of 0.5-core pods: 3 leaves at a time, whatever maxReplicaCount says.
    budget = Budget(cpu=Decimal("1.5"), pods=200)
    assert run_k8s(FAN, budget=budget) == pytest.approx(45, abs=SLACK)


@pytest.mark.parametrize("d", [CHAIN, DIAMOND, FAN], ids=["chain", "diamond", "fan-out"])
@pytest.mark.parametrize("lookahead", [False, True], ids=["reactive", "look-ahead"])
def test_zero_delays_give_the_critical_path(d, lookahead):
    assert run_k8s(d, lookahead=lookahead) == pytest.approx(d.critical_path(), abs=SLACK)


def test_zero_delays_locally_give_the_critical_path():
    chain = LocalChain(tick=EPS, fast_tick=EPS, unacked_refresh=EPS, quorum_tick=EPS,
                       worker_start=0.0, worker_stop=0.0, cooldown=0.0)
    runtime = LocalRuntime(chain, AMPLE)
    result = Simulation(DIAMOND, pools(DIAMOND), runtime).run()
    assert result.makespan == pytest.approx(13, abs=SLACK)


def test_cold_starts_by_hand():
    # Every pool starts cold and pods take 5 s: reactive pays it per stage, look-ahead once
    # (b and c are up before their predecessor ends).
    chain = replace(ZERO, pod_start=5.0)
    assert run_k8s(CHAIN, chain) == pytest.approx(60 + 3 * 5, abs=SLACK)
    assert run_k8s(CHAIN, chain, lookahead=True) == pytest.approx(5 + 60, abs=SLACK)


@pytest.mark.parametrize("d", [CHAIN, DIAMOND, FAN], ids=["chain", "diamond", "fan-out"])
def test_look_ahead_is_never_slower_with_the_default_chain(d):
    for seed in range(4):
        reactive = run_k8s(d, KubernetesChain(), seed=seed)
        ahead = run_k8s(d, KubernetesChain(), lookahead=True, seed=seed)
        assert ahead <= reactive + 1e-9
        assert reactive > d.critical_path()  # the chain's delays cost something


def test_upcoming_tasks_are_those_whose_predecessors_were_dispatched():
    seen: dict[str, int] = {}

    class Probe(StaticPools):
        def attach(self, sim):
            super().attach(sim)
            sim.at(0.0, lambda: seen.update({n: p.upcoming for n, p in sim.pools.items()}))

    Simulation(DIAMOND, pools(DIAMOND), Probe({"a": 1, "b": 3, "c": 1})).run()
    assert seen == {"a": 0, "b": 3, "c": 0}  # c waits for b's, which are not dispatched yet


def test_local_supervisor_hands_the_budget_to_the_next_stage_before_the_cooldown():
    # One worker fits; a's worker is held for the 30 s cooldown unless b needs the budget.
    two = dag(("a", 1, ()), ("b", 1, (0,)))
    budget = Budget(cpu=Decimal("0.5"), memory=Decimal(2**30))
    runtime = LocalRuntime(LocalChain(worker_start=0.5, cooldown=30.0), budget)
    makespan = Simulation(two, pools(two), runtime).run().makespan
    assert 3.0 < makespan < 6.0


def test_montage_durations_follow_the_pegasus_profile():
    path = workflow_file("legacy-montage-1.0-469")
    dag_ = load_dag(str(path))
    durations = montage_durations(dag_)
    assert durations["mProjectPP"] == 13.59
    assert durations["mConcatFit"] == pytest.approx(0.08 * 263, abs=0.01)
    assert durations["mAdd"] == pytest.approx(30.11 * 2, abs=0.01)  # 100 inputs: 2 deg^2
    sim_dag = from_dag(dag_, durations)
    assert len(sim_dag.tasks) == 469
    assert len(sim_dag.pool_types) == 9
    assert sim_dag.critical_path() == pytest.approx(209.1, abs=0.1)
    assert timing_fields(str(path)) == []
