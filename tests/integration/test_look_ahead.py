"""Look-ahead on the default path: ``hyperpool run`` warms a pool before its stage arrives.

Two pooled stages: ``first`` runs one task that sleeps, ``second`` one task after it. While
``first`` sleeps, the engine announces one upcoming task for ``second``'s queue; the local
supervisor starts a worker for it from the budget the backlog leaves over, before any message
is in that queue. With the pool's ``lookAhead: false``, or no budget to spare, it does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hyperpool.demand import UPCOMING_KEY
from hyperpool.local.state import read_states
from hyperpool.routing import EXECUTION_MODELS_FILE
from tests.conftest import hyperpool_env, wait_for

SLEEP = 4.0


def two_stages(tmp_path: Path) -> Path:
    work = tmp_path / "wf"
    work.mkdir()
    started = work / "first-started"
    workflow = {
        "name": "two-stages", "ins": [0], "outs": [2],
        "signals": [{"name": "go", "data": [1]}, {"name": "mid"}, {"name": "end"}],
        "processes": [
            {"name": "first", "ins": [0], "outs": [1], "config": {"executor": {
                "executable": "sh", "args": ["-c", f"touch {started}; sleep {SLEEP}"]}}},
            {"name": "second", "ins": [1], "outs": [2], "config": {"executor": {
                "executable": "true"}}},
        ],
    }
    (work / "workflow.json").write_text(json.dumps(workflow))
    (work / EXECUTION_MODELS_FILE).write_text(json.dumps([{"name": "first"},
                                                          {"name": "second"}]))
    return work


def pool_manifest(path: Path, task_type: str, look_ahead: bool) -> Path:
    path.write_text(f"""apiVersion: hyperflow.agh.edu.pl/v1
kind: WorkerPool
metadata:
  name: {task_type}
spec:
  taskType: {task_type}
  image: unused
  lookAhead: {str(look_ahead).lower()}
  initialResources:
    requests: {{cpu: 500m, memory: 256Mi}}
""")
    return path


def start_run(work: Path, namespace: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hyperpool", "run", str(work), "--cooldown", "30", *args],
        env=hyperpool_env(namespace, work), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def second_pool(redis_client, namespace: str) -> dict | None:
    for state in read_states(redis_client):
        for pool in state["pools"]:
            if pool["queue"] == f"{namespace}.second":
                return pool
    return None


def watch_second(work: Path, redis_client, namespace: str) -> list[dict]:
    """Snapshots of the second pool while the first task sleeps (after it started)."""
    wait_for(lambda: (work / "first-started").exists(), timeout=60, what="first task")
    seen, until = [], time.monotonic() + SLEEP - 1.0
    while time.monotonic() < until:
        pool = second_pool(redis_client, namespace)
        if pool is not None:
            seen.append(pool)
        time.sleep(0.2)
    return seen


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return out


def test_the_next_stage_is_warm_before_its_first_task(tmp_path, namespace, redis_client):
    work = two_stages(tmp_path)
    proc = start_run(work, namespace)
    try:
        seen = watch_second(work, redis_client, namespace)
    finally:
        finish(proc)
    assert seen, "the supervisor published no state for the second pool"
    warm = [p for p in seen if p["replicas"] >= 1]
    assert warm, f"the second pool never got a worker before its task: {seen[-1]}"
    # Warm *before* its stage: the queue was empty, the demand was the announcement.
    assert all(p["ready"] == 0 for p in warm) and warm[-1]["upcoming"] == 1
    assert warm[-1]["desired"] == 1
    # The run ended: its announcement is gone.
    assert not [k for k in redis_client.hkeys(UPCOMING_KEY)
                if k.decode().startswith(f"{namespace}.second ")]


@pytest.mark.parametrize("why", ["switched off", "no budget to spare"])
def test_no_warm_worker_when_switched_off_or_the_budget_is_used(tmp_path, namespace,
                                                                 redis_client, why):
    work = two_stages(tmp_path)
    if why == "switched off":
        args = ["--pools", str(pool_manifest(tmp_path / "second.yaml", "second", False))]
    else:
        # One worker's request of budget: the first stage's busy worker holds all of it.
        args = ["--budget-cpu", "500m", "--budget-memory", "1Gi",
                "--pools", str(pool_manifest(tmp_path / "first.yaml", "first", True)),
                "--pools", str(pool_manifest(tmp_path / "second.yaml", "second", True))]
    proc = start_run(work, namespace, *args)
    try:
        seen = watch_second(work, redis_client, namespace)
    finally:
        out = finish(proc)
    assert seen, "the supervisor published no state for the second pool"
    assert all(p["replicas"] == 0 for p in seen), [
        {k: p[k] for k in ("replicas", "ready", "unacked", "upcoming", "desired", "target")}
        for p in seen]
    if why == "switched off":
        assert all(p["upcoming"] == 0 for p in seen)  # the switch drops the term entirely
    else:
        assert any(p["upcoming"] == 1 for p in seen)  # announced, but nothing left to warm it
    assert "2/2 tasks succeeded" in out


def test_announcements_sum_over_runs_and_stale_ones_are_dropped(namespace, redis_client):
    from collections import Counter

    from hyperpool.demand import UpcomingPublisher, UpcomingReader

    queue = f"{namespace}.second"
    one, two = (UpcomingPublisher(redis_client, f"{namespace}-run{i}") for i in (1, 2))
    reader = UpcomingReader(redis_client, [queue])
    one.publish(Counter({queue: 2}))
    two.publish(Counter({queue: 3}))
    assert reader() == {queue: 5}
    one.publish(Counter({queue: 0}))  # its stage arrived: the field goes
    assert reader() == {queue: 3}
    dead = f"{queue} {namespace}-crashed"
    redis_client.hset(UPCOMING_KEY, dead, "7 1.0")  # an engine that died long ago
    assert reader() == {queue: 3} and not redis_client.hexists(UPCOMING_KEY, dead)
    two.close()
    assert reader() == {}
