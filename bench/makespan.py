"""Makespan of real Montage workflows (goal 4): pools vs the job model vs an ideal schedule.

Each run is the command users type, ``hyperpool run WORKDIR --no-local-pools --stub-sleep S``,
with its ``--json-summary`` makespan (engine start to last result). Stubs keep the DAG's shape
and make every task take exactly S seconds, so the schedule the system achieves can be
compared with a lower bound computed from the DAG alone:

    ideal = max(critical path, max over slot classes c of (work of c) / (slots of c))

A slot class is one pool (its task type, ``concurrency`` slots) or the job model (``max_jobs``
slots). For the all-jobs run there is one class and this is exactly
max(critical path, total work / workers); with pools it is the same bound per pool, because a
pool only runs its own task type. With 0 s stubs the bound is 0, so those rows show pure
per-task overhead instead of a ratio. Three configurations:

* **pools**: the three wide types pooled, 4 slots each, the rest in the job model with 4 slots
  (16 slots, as a small cluster); Montage's stage barriers keep every schedule, even a
  zero-overhead one, well above the bound here (column *schedule*);
* **pools-wide**: every type pooled, each with as many slots as its widest stage (what
  autoscaled pools reach on a cluster; on this machine a slot is a thread and a stub a
  sleep). The bound is then the critical path, so makespan / ideal is hyperpool's own
  overhead along the DAG: this is the row goal 4 is judged on;
* **jobs**: everything in the job model, 16 slots.

The job model starts one ``hyperpool execute`` process per task (about 0.3 s of CPU each), so
its runs are the slowest part of the whole benchmark: fewer of them are repeated, and
``--quick`` keeps only the small workflows.
"""

from __future__ import annotations

import heapq
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    bench_env,
    bench_settings,
    delete_queues,
    new_namespace,
    workers,
    workflow_file,
)
from hyperpool.engine.dag import Dag, build_dag
from hyperpool.engine.loader import load_workflow
from hyperpool.routing import EXECUTION_MODELS_FILE

ENV = {"HF_VAR_function": "command"}  # montage143 names its function {{function}}
# Widest stage of each type in the largest workflow measured (legacy-montage-1.0-469).
WIDEST = {"mProjectPP": 100, "mDiffFit": 263, "mConcatFit": 1, "mBgModel": 1,
          "mBackground": 100, "mImgtbl": 1, "mAdd": 1, "mShrink": 1, "mJPEG": 1}


@dataclass
class Config:
    """One way of running a workflow: which types are pooled and how many slots each gets."""

    name: str
    concurrency: dict[str, int]  # pooled task type -> slots of its pool (all replicas)
    max_jobs: int
    replicas: dict[str, int] = field(default_factory=dict)  # worker processes (default 1)

    @property
    def pooled(self) -> list[str]:
        return list(self.concurrency)

    def slots(self, task_type: str) -> int:
        return self.concurrency.get(task_type, self.max_jobs)

    def workers(self, namespace: str) -> list[tuple[str, int]]:
        """(queue, slots) of every worker process: a pool's slots split over its replicas."""
        out = []
        for task_type, slots in self.concurrency.items():
            replicas = self.replicas.get(task_type, 1)
            out += [(f"{namespace}.{task_type}", -(-slots // replicas))] * replicas
        return out


POOLS = Config("pools", dict.fromkeys(["mProjectPP", "mDiffFit", "mBackground"], 4), max_jobs=4)
# A pool this wide runs as several replicas on a cluster; here as many as there are cores, so
# the stage's message intake (Celery's consumer, one per process) is not one process's alone.
WIDE = Config("pools-wide", dict(WIDEST), max_jobs=4,
              replicas={t: 2 for t, n in WIDEST.items() if n >= 50})
JOBS = Config("jobs", {}, max_jobs=16)
CONFIGS = (POOLS, WIDE, JOBS)


@dataclass
class Row:
    workflow: str
    tasks: int
    config: str
    stub: float
    ideal: float
    critical_path: float
    simulated: float
    makespans: list[float] = field(default_factory=list)


def ideal(dag: Dag, config: Config, stub: float) -> tuple[float, float]:
    """(ideal makespan, critical path) of ``dag`` with every dispatched task taking ``stub``."""
    duration = [stub if t.process.dispatches else 0.0 for t in dag.tasks]
    finish = [0.0] * len(dag.tasks)
    for task in dag.tasks:  # build_dag lists tasks in dependency order
        start = max((finish[d] for d in task.deps), default=0.0)
        finish[task.index] = start + duration[task.index]
    critical = max(finish, default=0.0)
    work: Counter[str] = Counter()
    for task in dag.tasks:
        pooled = task.task_type in config.pooled
        work[task.task_type if pooled else "(jobs)"] += duration[task.index]
    bound = max((w / config.slots(c) for c, w in work.items() if w), default=0.0)
    return max(critical, bound), critical


def simulate(dag: Dag, config: Config, stub: float) -> float:
    """Makespan of a zero-overhead greedy schedule of ``dag`` on ``config``'s slots.

    The bound above ignores Montage's barriers (mConcatFit waits for every mDiffFit, mAdd for
    every mBackground), so no real schedule reaches it; this simulation does what the engine
    does (run whatever is ready, in order, on a free slot of its class) with no messaging,
    start-up or process cost, separating the DAG's shape from hyperpool's overheads.
    """
    def slot_class(task_type: str) -> str:
        return task_type if task_type in config.pooled else "(jobs)"

    free = {slot_class(t): config.slots(t) for t in config.pooled}
    free["(jobs)"] = config.max_jobs
    pending = [len(t.deps) for t in dag.tasks]
    ready: dict[str, deque[int]] = {c: deque() for c in free}
    running: list[tuple[float, int]] = []
    now, done = 0.0, 0

    def release(index: int) -> None:
        nonlocal done
        task = dag.tasks[index]
        if not task.process.dispatches:  # completes at dispatch, no slot (as in the engine)
            done += 1
            for dep in dag.dependents[index]:
                pending[dep] -= 1
                if pending[dep] == 0:
                    release(dep)
            return
        ready[slot_class(task.task_type)].append(index)

    for task in dag.tasks:
        if not task.deps:
            release(task.index)
    while done < len(dag.tasks):
        for cls, queue in ready.items():
            while queue and free[cls]:
                free[cls] -= 1
                heapq.heappush(running, (now + stub, queue.popleft()))
        now, index = heapq.heappop(running)
        free[slot_class(dag.tasks[index].task_type)] += 1
        done += 1
        for dep in dag.dependents[index]:
            pending[dep] -= 1
            if pending[dep] == 0:
                release(dep)
    return now


def run_once(name: str, config: Config, stub: float, namespace: str) -> float:
    work = Path(tempfile.mkdtemp(prefix=f"hyperpool-bench-{name}-"))
    shutil.copy(workflow_file(name), work / "workflow.json")
    (work / EXECUTION_MODELS_FILE).write_text(json.dumps([{"name": n} for n in config.pooled]))
    summary = work / "summary.json"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hyperpool", "run", str(work), "--no-local-pools",
             "--stub-sleep", str(stub), "--max-jobs", str(config.max_jobs),
             "--json-summary", str(summary)],
            env=bench_env(namespace, work, **ENV), capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} ({config.name}) failed:\n{proc.stderr[-2000:]}")
        return float(json.loads(summary.read_text())["makespan_seconds"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(plan: list[tuple[str, Config, float, int]]) -> list[Row]:
    """Run (workflow, config, stub, repeats) entries; each row keeps all its makespans.

    The pools (one ``hyperpool worker`` per pooled type and configuration, in the
    configuration's own namespace) are started once, warm, and shared by every run, as
    long-running pools would be; each run has its own run id and stream.
    """
    base = new_namespace()
    home = Path(tempfile.mkdtemp(prefix="hyperpool-bench-pools-"))
    configs = {c.name: c for _, c, _, _ in plan}
    spaces = {name: f"{base}{i}" for i, name in enumerate(configs)}
    starts = [start for c in configs.values() for start in c.workers(spaces[c.name])]
    rows = []
    try:
        with workers(starts, namespace=base, work_dir=home):
            for name, config, stub, repeats in plan:
                namespace = spaces[config.name]
                dag = build_dag(load_workflow(workflow_file(name), env=ENV))
                best, critical = ideal(dag, config, stub)
                row = Row(name, len(dag.tasks), config.name, stub, best, critical,
                          simulate(dag, config, stub))
                for _ in range(repeats):
                    row.makespans.append(run_once(name, config, stub, namespace))
                print(f"  makespan {name} {config.name} stub {stub}: "
                      f"{[round(m, 2) for m in row.makespans]} (ideal {best:.2f}s, "
                      f"simulated {row.simulated:.2f}s)", flush=True)
                rows.append(row)
    finally:
        delete_queues(bench_settings(base, home), base)
        shutil.rmtree(home, ignore_errors=True)
    return rows


def default_plan(quick: bool) -> list[tuple[str, Config, float, int]]:
    """Pools: every workflow, both stubs, median of 3; the rows goal 4 is judged on
    (pools-wide, 0.2 s stubs) median of 5, since a quorum queue's delivery waits for the
    disk and this machine's fsync stalls now and then (see the notes). Job model: one process
    per task is slow, so the 469-task workflow runs once and only with 0.2 s stubs."""
    if quick:
        return [(name, config, stub, 1) for stub in (0.0, 0.2)
                for name, config in (("legacy-montage-0.25-43", POOLS),
                                     ("legacy-montage-0.25-43", WIDE),
                                     ("montage143-143", WIDE),
                                     ("legacy-montage-0.25-43", JOBS))]
    plan = []
    for stub in (0.0, 0.2):
        for name in ("legacy-montage-0.25-43", "montage143-143", "legacy-montage-1.0-469"):
            plan.append((name, POOLS, stub, 3))
            plan.append((name, WIDE, stub, 5 if stub else 3))
        plan.append(("legacy-montage-0.25-43", JOBS, stub, 3))
        plan.append(("montage143-143", JOBS, stub, 1))
    plan.append(("legacy-montage-1.0-469", JOBS, 0.2, 1))
    return plan
