"""Look-ahead demand: the engine's incremental count and the formula's warm replica."""

from __future__ import annotations

from decimal import Decimal

from hyperpool.engine.upcoming import Upcoming
from hyperpool.scaling import PoolDemand, desired_replicas

CPU = {"cpu": Decimal(1)}


def chain() -> Upcoming:
    """a -> b -> c, plus a job-model task j after a (no queue: never counted)."""
    deps = [[], [0], [1], [0]]
    dependents = [[1, 3], [2], [], []]
    return Upcoming(deps, dependents, ["qa", "qb", "qc", None], lambda i: False)


def test_a_task_is_upcoming_once_its_predecessors_are_dispatched_until_it_is_ready():
    up = chain()
    assert +up.counts == {}
    up.dispatched(0)
    assert +up.counts == {"qb": 1}  # j has no queue
    up.dispatched(0)  # a second attempt of a does not count b twice
    assert +up.counts == {"qb": 1}
    up.left([1])  # b became ready: its message is in its queue now
    assert +up.counts == {}
    up.dispatched(1)
    assert +up.counts == {"qc": 1}
    up.dispatched(2)
    assert +up.counts == {}


def test_a_resumed_run_counts_from_what_it_already_dispatched():
    deps, dependents = [[], [0], [1]], [[1], [2], []]
    up = Upcoming(deps, dependents, ["qa", "qb", "qc"], lambda i: i == 0)
    assert +up.counts == {"qb": 1}


def test_a_diamond_waits_for_every_predecessor():
    deps, dependents = [[], [], [0, 1]], [[2], [2], []]
    up = Upcoming(deps, dependents, ["q", "q", "qd"], lambda i: False)
    up.dispatched(0)
    assert +up.counts == {}
    up.dispatched(1)
    assert +up.counts == {"qd": 1}


def pool(name: str, depth: int = 0, upcoming: int = 0, max_replicas: int = 10) -> PoolDemand:
    return PoolDemand(name, depth, max_replicas, requests=CPU, upcoming=upcoming)


def test_upcoming_work_gets_one_warm_replica_from_the_budget_left_over():
    assert desired_replicas([pool("a", depth=1), pool("b", upcoming=5)],
                            {"cpu": Decimal(3)}) == {"a": 1, "b": 1}
    # Never more than one for announced work, and nothing without a budget constraint either.
    assert desired_replicas([pool("b", upcoming=50)], {}) == {"b": 1}


def test_the_warm_replica_never_takes_budget_from_waiting_work():
    assert desired_replicas([pool("a", depth=4), pool("b", upcoming=3)],
                            {"cpu": Decimal(3)}) == {"a": 3, "b": 0}
    # Room for one: the pool with the most upcoming work gets it.
    got = desired_replicas([pool("a", depth=2), pool("b", upcoming=1), pool("c", upcoming=9)],
                           {"cpu": Decimal(3)})
    assert got == {"a": 2, "b": 0, "c": 1}


def test_a_pool_with_a_backlog_or_no_replicas_allowed_is_left_as_the_formula_says():
    assert desired_replicas([pool("a", depth=2, upcoming=9)], {"cpu": Decimal(8)}) == {"a": 2}
    assert desired_replicas([pool("z", upcoming=9, max_replicas=0)], {}) == {"z": 0}
