"""What the pool simulation runs: a workflow's tasks, their durations, and the pools' shapes.

The DAG comes from the project's own loader and expander (:mod:`hyperpool.engine.loader`,
:mod:`hyperpool.engine.dag`), so a simulated task has exactly the dependencies the engine
would wait for, and a process without an executor completes at dispatch as the engine's does.

Durations: the real workflow files carry no runtimes (legacy ``tasks``/``data`` entries hold a
name, a command and signal indices only), so every task of a type gets one constant. For the
Montage DAGs the constants are the Montage profile of the Pegasus workflow generator
(pegasus-isi/WorkflowGenerator, ``src/simulation/generator/app/Montage.java``, Bharathi et al.
2008), which gives per-task means for the wide stages and per-size formulas for the single
tasks; :func:`montage_durations` evaluates them for the DAG at hand.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from hyperpool.engine.dag import Dag, build_dag
from hyperpool.engine.loader import load_workflow

POOL, JOB, NONE = "pool", "job", "none"

# pegasus-isi/WorkflowGenerator Montage.java (values "for a 1.0 degree workflow"): seconds per
# task, or per mDiffFit (mConcatFit, mBgModel), per input image (mImgTbl), per degree^2 (mAdd),
# per degree (mShrink); mJPEG runs at 549,291 B/s on a quarter of the shrunk mosaic.
PEGASUS_MEAN = {"mProjectPP": 13.59, "mDiffFit": 10.59, "mBackground": 10.74}
PEGASUS_PER_DIFF = {"mConcatFit": 0.08, "mBgModel": 0.13}
PEGASUS_IMGTBL_PER_INPUT = 0.37
PEGASUS_ADD_PER_DEGREE2 = 30.11
PEGASUS_SHRINK_PER_DEGREE = 12.21
PEGASUS_MOSAIC_BYTES_PER_DEGREE = 173_465_280
PEGASUS_SHRINK_FACTOR = 24.99
PEGASUS_JPEG_RATE = 549_291.0
PEGASUS_INPUTS_PER_DEGREE2 = 50


@dataclass(frozen=True, slots=True)
class SimTask:
    index: int
    task_type: str
    deps: tuple[int, ...]
    duration: float
    model: str  # POOL, JOB, or NONE (completes when dispatched, nothing runs)


@dataclass
class SimDag:
    """The tasks in dependency order (build_dag's order) and who waits for whom."""

    name: str
    tasks: list[SimTask]
    dependents: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.dependents:
            self.dependents = [[] for _ in self.tasks]
            for task in self.tasks:
                for dep in task.deps:
                    self.dependents[dep].append(task.index)

    @property
    def pool_types(self) -> list[str]:
        """Pooled task types in order of first appearance (one pool each)."""
        return list(dict.fromkeys(t.task_type for t in self.tasks if t.model == POOL))

    def critical_path(self) -> float:
        """Longest chain of durations: the makespan with unlimited, instant workers."""
        finish = [0.0] * len(self.tasks)
        for task in self.tasks:
            start = max((finish[d] for d in task.deps), default=0.0)
            finish[task.index] = start + (task.duration if task.model != NONE else 0.0)
        return max(finish, default=0.0)

    def work(self) -> float:
        return sum(t.duration for t in self.tasks if t.model != NONE)


Durations = Mapping[str, float] | Callable[[str], float]


def from_dag(dag: Dag, durations: Durations, *, jobs: Collection[str] = (),
             name: str | None = None) -> SimDag:
    """``dag``'s tasks with a duration per task type; types in ``jobs`` run in the job model."""
    look = durations if callable(durations) else durations.__getitem__
    tasks = []
    for task in dag.tasks:
        model = NONE if not task.process.dispatches else JOB if task.task_type in jobs else POOL
        duration = 0.0 if model == NONE else float(look(task.task_type))
        tasks.append(SimTask(task.index, task.task_type, tuple(task.deps), duration, model))
    dependents = [list(d) for d in dag.dependents]
    return SimDag(name or dag.workflow.name, tasks, dependents)


def load_dag(path: str, env: Mapping[str, str] | None = None) -> Dag:
    return build_dag(load_workflow(path, env=env))


TIMING = re.compile(r"time|runtime|duration|elapsed|seconds", re.IGNORECASE)


def timing_fields(path: str) -> list[str]:
    """Keys anywhere in a workflow file that could hold a task's runtime (none, so far)."""
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if TIMING.search(str(key)):
                    found.add(str(key))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    with open(path, encoding="utf-8") as handle:
        walk(json.load(handle))
    return sorted(found)


def montage_durations(dag: Dag) -> dict[str, float]:
    """The Pegasus generator's Montage profile for this DAG's size (see the module docstring).

    The generator scales the single tasks with the workflow: mConcatFit and mBgModel with the
    number of mDiffFit tasks, mImgtbl with the inputs, mAdd/mShrink/mJPEG with the mosaic's
    size in degrees, ``sqrt(inputs / 50)``.
    """
    counts = Counter(t.task_type for t in dag.tasks)
    inputs, diffs = counts["mProjectPP"], counts["mDiffFit"]
    degree = math.sqrt(inputs / PEGASUS_INPUTS_PER_DEGREE2)
    jpeg_bytes = PEGASUS_MOSAIC_BYTES_PER_DEGREE * degree / PEGASUS_SHRINK_FACTOR / 4
    out = dict(PEGASUS_MEAN)
    out.update({t: per * diffs for t, per in PEGASUS_PER_DIFF.items()})
    out["mImgtbl"] = PEGASUS_IMGTBL_PER_INPUT * inputs
    out["mAdd"] = PEGASUS_ADD_PER_DEGREE2 * degree**2
    out["mShrink"] = PEGASUS_SHRINK_PER_DEGREE * degree
    out["mJPEG"] = jpeg_bytes / PEGASUS_JPEG_RATE
    missing = set(counts) - set(out)
    if missing:
        raise ValueError(f"no Montage profile for task types {sorted(missing)}")
    return {t: round(v, 2) for t, v in out.items() if t in counts}


@dataclass(frozen=True)
class PoolConf:
    """One WorkerPool: the spec's bounds and what a replica charges against the budget."""

    max_replicas: int = 50  # WorkerPoolSpec.maxReplicaCount's default
    concurrency: int = 1
    cpu: Decimal = Decimal("0.5")  # the HyperFlow operator's request (and the local default)
    memory: Decimal = Decimal(256 * 2**20)


@dataclass(frozen=True)
class Budget:
    """What the namespace's ResourceQuota (or the machine, locally) leaves to worker pools."""

    cpu: Decimal
    pods: int | None = None
    memory: Decimal | None = None

    def mapping(self) -> dict[str, Decimal]:
        out = {"cpu": self.cpu}
        if self.pods is not None:
            out["pods"] = Decimal(self.pods)
        if self.memory is not None:
            out["memory"] = self.memory
        return out

    def fits(self, cpu: Decimal, pods: int, memory: Decimal) -> bool:
        return (cpu <= self.cpu and (self.pods is None or pods <= self.pods)
                and (self.memory is None or memory <= self.memory))


def requests(conf: PoolConf) -> dict[str, Decimal]:
    """A replica's charges in the keys :func:`hyperpool.scaling.fit` matches with the budget."""
    return {"cpu": conf.cpu, "pods": Decimal(1), "memory": conf.memory}
