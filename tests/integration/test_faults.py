"""Faults during a run: 0 tasks lost, every completion counted exactly once.

Each test prints one line (runs, tasks, lost, duplicates) that the closing notes quote;
``make chaos`` runs them with more rounds (HYPERPOOL_CHAOS_ROUNDS).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import redis

from hyperpool.executor.publisher import Publisher
from hyperpool.executor.results import ResultReader, run_stream
from hyperpool.models import TaskMessage
from tests.conftest import hyperpool_env, montage_workflow, wait_for
from tests.integration.private_services import PrivateRabbit, PrivateRedis
from tests.integration.test_engine import workdir_for

ROUNDS = int(os.environ.get("HYPERPOOL_CHAOS_ROUNDS", "1"))
MONTAGE_POOLS = ["mProject", "mDiffFit", "mBackground"]  # examples/montage/make_workflow.py


def start_run(work, namespace, *args, **env):
    return subprocess.Popen(
        [sys.executable, "-m", "hyperpool", "run", str(work), "--no-local-pools",
         "--json-summary", str(work / "summary.json"), *args],
        env=hyperpool_env(namespace, work, HF_VAR_function="command", **env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, work, timeout=240):
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    summary = json.loads((work / "summary.json").read_text())
    lost = summary["tasks_total"] - summary["succeeded"]
    assert lost == 0 and summary["failed"] == 0
    return summary


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_sigkill_storm(round_, tmp_path, namespace, start_worker):
    """≥1,000 tasks; a random executor (worker and its pool child) is SIGKILLed every ~2 s."""
    doc = montage_workflow(tmp_path / "gen", rows=15, cols=15)  # 1,268 tasks
    work = workdir_for(tmp_path, doc, MONTAGE_POOLS)
    workers = [start_worker(f"{namespace}.{t}", work_dir=work) for t in MONTAGE_POOLS
               for _ in range(2)]
    run = start_run(work, namespace, "--stub-sleep", "0.01")
    kills = 0
    stop = threading.Event()

    def storm():
        nonlocal kills
        rng = random.Random(round_)
        while not stop.wait(2.0):
            victim = rng.choice(workers)
            victim.kill_group()
            victim.proc.wait()
            kills += 1
            workers[workers.index(victim)] = start_worker(victim.queue, work_dir=work)

    thread = threading.Thread(target=storm, daemon=True)
    thread.start()
    try:
        summary = finish(run, work)
    finally:
        stop.set()
        thread.join()
    assert summary["tasks_total"] == len(doc["processes"]) >= 1000
    assert kills >= 2, "the storm must have hit the run"
    print(f"\nsigkill-storm: tasks={summary['tasks_total']} kills={kills} lost=0 "
          f"duplicates={summary['duplicates_ignored']}")


def test_scale_down_under_load_finishes_running_tasks(tmp_path, namespace, start_worker):
    """SIGTERM to busy executors (as KEDA/the autoscaler would): warm shutdown, nothing lost."""
    procs = [{"name": "work", "ins": [0], "outs": [], "config": {"executor": {
        "executable": "sh", "args": ["-c", f"echo start{i} >> log; sleep 1; echo end{i} >> log"]}}}
        for i in range(12)]
    wf = {"name": "load", "processes": procs, "signals": [{"name": "go", "data": [{}]}]}
    work = workdir_for(tmp_path, wf, ["work"])
    first = [start_worker(f"{namespace}.work", work_dir=work) for _ in range(3)]
    run = start_run(work, namespace)
    wait_for(lambda: (work / "log").exists() and
             (work / "log").read_text().count("start") >= 3, what="3 busy workers")
    started = time.monotonic()
    for worker in first:
        worker.signal(signal.SIGTERM)
    for _ in range(3):
        start_worker(f"{namespace}.work", work_dir=work)
    for worker in first:
        assert worker.proc.wait(timeout=30) == 0
    grace = time.monotonic() - started
    summary = finish(run, work)
    lines = Counter((work / "log").read_text().split())
    assert all(lines[f"start{i}"] == lines[f"end{i}"] == 1 for i in range(12)), lines
    assert grace < 10
    print(f"\nscale-down: tasks=12 interrupted=0 lost=0 duplicates={summary['duplicates_ignored']}"
          f" drain={grace:.1f}s")


def restart_mid_run(service, env, label, tmp_path, namespace, start_worker) -> None:
    """Run 440 tasks through pools and stop + restart ``service`` while they run."""
    service.start()
    try:
        doc = montage_workflow(tmp_path / "gen", rows=9, cols=9)  # 440 tasks
        work = workdir_for(tmp_path, doc, MONTAGE_POOLS)
        for task_type in MONTAGE_POOLS:
            start_worker(f"{namespace}.{task_type}", work_dir=work, **env)
        run = start_run(work, namespace, "--stub-sleep", "0.05", **env)
        time.sleep(2.0)
        assert run.poll() is None, f"the run must still be going when {label} stops"
        service.stop()
        time.sleep(2.0)
        service.start()
        summary = finish(run, work)
        assert summary["tasks_total"] == len(doc["processes"]) == 440
        print(f"\n{label}-restart: tasks=440 lost=0 "
              f"duplicates={summary['duplicates_ignored']}")
    finally:
        service.stop()


def test_broker_restart_mid_run(tmp_path, namespace, start_worker):
    """Durable quorum queues, persistent messages and confirms carry the run across it."""
    rabbit = PrivateRabbit()
    try:
        restart_mid_run(rabbit, {"HYPERPOOL_BROKER_URL": rabbit.url}, "broker", tmp_path,
                        namespace, start_worker)
    finally:
        rabbit.remove()


def test_redis_restart_mid_run(tmp_path, namespace, start_worker):
    """Executors retry their reports and the engine waits; the stream survives (AOF)."""
    store = PrivateRedis(tmp_path / "redis")
    restart_mid_run(store, {"HYPERPOOL_REDIS_URL": store.url}, "redis", tmp_path, namespace,
                    start_worker)


def test_a_task_arriving_while_redis_is_down_waits_for_it(tmp_path, namespace, settings,
                                                          start_worker):
    """The check before a task (cancel flag, done-set) rides out a Redis outage like the
    report does; it used to raise and dead-letter every message the pool took meanwhile."""
    store = PrivateRedis(tmp_path / "redis")
    store.start()
    queue = f"{namespace}.mAdd"
    try:
        start_worker(queue, work_dir=tmp_path, HYPERPOOL_REDIS_URL=store.url)
        stream = run_stream(f"outage-{namespace}")
        store.stop()
        publisher = Publisher(settings)
        try:
            for i in range(3):
                publisher.publish(queue, TaskMessage(taskId=f"t{i}", name="mAdd",
                                                     executable="true", args=[]),
                                  reply_to=stream, run_id=f"outage-{namespace}")
        finally:
            publisher.close()
        time.sleep(1.5)  # the worker has taken the first message and is waiting for Redis
        store.start()
        reader = ResultReader(redis.Redis.from_url(store.url), stream)
        results: dict[str, object] = {}
        wait_for(lambda: results.update({r.task_id: r for r in reader.read(block_ms=200)})
                 or len(results) == 3, timeout=30, what="3 results after the outage")
        assert all(r.ok for r in results.values())
    finally:
        store.stop()
