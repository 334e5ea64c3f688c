"""The desired-replicas formula and the quantities it is fed (pure, no services)."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperpool.quantities import format_bytes, format_cpu, parse_quantity
from hyperpool.scaling import PoolDemand, desired_replicas, fit, quota_max_replicas

HALF_CORE = {"cpu": Decimal("0.5"), "memory": Decimal(512 * 2**20)}


def pool(name: str, depth: int, *, max_replicas: int = 50, min_replicas: int = 0,
         requests: dict[str, Decimal] | None = None) -> PoolDemand:
    return PoolDemand(name, depth, max_replicas, min_replicas,
                      HALF_CORE if requests is None else requests)


@pytest.mark.parametrize(("text", "value"), [
    ("500m", Decimal("0.5")),
    ("0.5", Decimal("0.5")),
    ("2", Decimal(2)),
    ("512Mi", Decimal(512 * 2**20)),
    ("524288000", Decimal(524288000)),
    ("1Gi", Decimal(2**30)),
    ("1G", Decimal(10**9)),
    ("1e3", Decimal(1000)),
    ("100k", Decimal(100000)),
    (" 250m ", Decimal("0.25")),
    (3, Decimal(3)),
])
def test_quantities_are_parsed_not_assumed(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["lots", "5 cores", "-1", "", "1.2.3", "0.5Mix", True, -2])
def test_bad_quantities_name_the_text(bad):
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(bad)


def test_quantities_render_as_kubernetes_writes_them():
    assert format_cpu(Decimal("0.5")) == "500m"
    assert format_cpu(Decimal(2)) == "2"
    assert format_bytes(512 * 2**20) == "512Mi"
    assert format_bytes(1000) == "1000"


def test_pools_share_the_budget_in_proportion_to_their_depths():
    budget = {"cpu": Decimal(2), "memory": Decimal(8 * 2**30)}  # fits 4 half-core workers
    result = desired_replicas([pool("a", 30), pool("b", 10)], budget)
    assert result == {"a": 3, "b": 1}
    # Same backlog, same share.
    assert desired_replicas([pool("a", 8), pool("b", 8)], budget) == {"a": 2, "b": 2}


def test_a_pool_alone_gets_all_that_fits():
    budget = {"cpu": Decimal(2), "memory": Decimal(8 * 2**30)}
    assert desired_replicas([pool("a", 100), pool("b", 0)], budget) == {"a": 4, "b": 0}


def test_zero_depth_means_zero_replicas_unless_a_minimum_is_set():
    budget = {"cpu": Decimal(4)}
    result = desired_replicas([pool("idle", 0), pool("floor", 0, min_replicas=2)], budget)
    assert result == {"idle": 0, "floor": 2}


def test_exhausted_budget_fits_nothing():
    assert fit(HALF_CORE, {"cpu": Decimal("0.4")}) == 0
    assert fit(HALF_CORE, {"cpu": Decimal(-1)}) == 0  # non-pool use above the hard limit
    result = desired_replicas([pool("a", 10)], {"cpu": Decimal("0.4")})
    assert result == {"a": 0}


def test_the_scarcest_resource_decides_the_fit():
    budget = {"cpu": Decimal(100), "memory": parse_quantity("1Gi")}
    assert fit(HALF_CORE, budget) == 2
    assert desired_replicas([pool("a", 10)], budget) == {"a": 2}


def test_unmentioned_or_zero_resources_do_not_constrain():
    assert fit({"cpu": Decimal(0)}, {"cpu": Decimal(1)}) is None
    assert fit({"gpu": Decimal(1)}, {"cpu": Decimal(1)}) is None
    assert desired_replicas([pool("a", 7, requests={})], {"cpu": Decimal(1)}) == {"a": 7}


def test_max_replicas_caps_the_result():
    budget = {"cpu": Decimal(64)}
    assert desired_replicas([pool("a", 100, max_replicas=3)], budget) == {"a": 3}
    assert quota_max_replicas(3, HALF_CORE, budget) == 3
    assert quota_max_replicas(50, HALF_CORE, {"cpu": Decimal(2)}) == 4


def test_min_replicas_is_a_floor_applied_after_the_formula():
    result = desired_replicas([pool("a", 1, min_replicas=3)], {"cpu": Decimal(8)})
    assert result == {"a": 3}


def test_depth_is_never_exceeded():
    result = desired_replicas([pool("a", 2), pool("b", 1)], {"cpu": Decimal(64)})
    assert result == {"a": 2, "b": 1}


@given(
    depths=st.lists(st.integers(0, 500), min_size=1, max_size=6),
    maxes=st.lists(st.integers(0, 60), min_size=6, max_size=6),
    mins=st.lists(st.integers(0, 3), min_size=6, max_size=6),
    cores=st.integers(0, 32),
)
def test_formula_properties(depths, maxes, mins, cores):
    pools = [pool(f"p{i}", d, max_replicas=max(maxes[i], mins[i]), min_replicas=mins[i])
             for i, d in enumerate(depths)]
    budget = {"cpu": Decimal(cores), "memory": Decimal(2**40)}
    result = desired_replicas(pools, budget)
    room = fit(HALF_CORE, budget)
    assert room == cores * 2
    for p in pools:
        got = result[p.name]
        assert got >= p.min_replicas
        # Never more than its backlog or its max (above the floor).
        assert got <= max(p.min_replicas, min(p.max_replicas, p.depth))
        if p.depth > 0 and p.max_replicas > 0 and room > 0:
            assert got >= 1, "a pool with work and room is never starved"
    # Above the floors, ceilings add at most one replica per pool to the budget's fit.
    busy = [p for p in pools if p.depth > 0]
    above_floor = sum(max(0, result[p.name] - p.min_replicas) for p in pools)
    assert above_floor <= room + len(busy)
    assert sum(min(result[p.name], math.ceil(p.depth / max(1, sum(depths)) * room))
               for p in busy) <= room + len(busy)


def test_a_replica_running_several_tasks_is_counted_once_per_concurrency():
    """concurrency 4: 10 messages need 3 replicas, not 10; the budget share is unchanged."""
    pods = {"cpu": Decimal("0.5")}
    wide = PoolDemand("wide", 10, max_replicas=50, requests=pods, concurrency=4)
    single = PoolDemand("single", 10, max_replicas=50, requests=pods)
    assert desired_replicas([wide], {}) == {"wide": 3}
    assert desired_replicas([wide, single], {"cpu": Decimal(2)}) == {"wide": 2, "single": 2}
    assert desired_replicas([PoolDemand("w", 0, 5, concurrency=4)], {}) == {"w": 0}
    assert desired_replicas([PoolDemand("w", 1, 5, concurrency=4)], {}) == {"w": 1}
