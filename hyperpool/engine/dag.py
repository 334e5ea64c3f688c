"""Expanding a workflow's processes into the task DAG the scheduler runs.

A dataflow process fires once per complete set of input-signal instances (firing *k* consumes
instance *k* of each input), at most ``firingLimit`` times. An initial signal has one instance
per element of its ``data`` (one if it is only listed in ``ins``); a produced signal has one
instance per firing of its producer. Task *(p, k)* therefore depends on firing *k* of each of
its inputs' producers. Everything is computed before the run starts, so cycles, duplicate
producers and inputs nobody produces are rejected up front, naming the process and signal.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from hyperpool.engine.loader import Process, Workflow
from hyperpool.errors import ConfigError


@dataclass(slots=True)
class Task:
    index: int
    process: Process
    firing: int
    deps: list[int]

    @property
    def task_type(self) -> str:
        return self.process.name


@dataclass
class Dag:
    workflow: Workflow
    tasks: list[Task]
    dependents: list[list[int]]


def _producers(wf: Workflow) -> dict[int, Process]:
    producer: dict[int, Process] = {}
    for proc in wf.processes:
        for sig in proc.outs:
            if sig in producer:
                raise ConfigError(
                    f"signal {wf.signals[sig].name!r} (index {sig}) is produced by both "
                    f"{producer[sig].name!r} (process {producer[sig].index}) and {proc.name!r} "
                    f"(process {proc.index}); a signal has one producer",
                    source=wf.source, where=f"processes[{proc.index}].outs")
            if sig in wf.inputs:
                raise ConfigError(
                    f"signal {wf.signals[sig].name!r} is a workflow input but is also produced "
                    f"by {proc.name!r}", source=wf.source, where=f"processes[{proc.index}].outs")
            producer[sig] = proc
    return producer


def _process_order(wf: Workflow, producer: dict[int, Process]) -> list[Process]:
    """Processes in dependency order (Kahn); a leftover means a cycle, which we name."""
    consumers: dict[int, list[int]] = {p.index: [] for p in wf.processes}
    indegree = {p.index: 0 for p in wf.processes}
    for proc in wf.processes:
        for sig in set(proc.ins):
            src = producer.get(sig)
            if src is None:
                if sig not in wf.inputs:
                    raise ConfigError(
                        f"input signal {wf.signals[sig].name!r} (index {sig}) is neither produced "
                        "by a process nor a workflow input ('ins' or 'data')",
                        source=wf.source, where=f"processes[{proc.index}] ({proc.name}).ins")
                continue
            consumers[src.index].append(proc.index)
            indegree[proc.index] += 1
    ready = deque(i for i, d in indegree.items() if d == 0)
    order: list[Process] = []
    while ready:
        i = ready.popleft()
        order.append(wf.processes[i])
        for j in consumers[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                ready.append(j)
    if len(order) != len(wf.processes):
        stuck = [wf.processes[i] for i, d in indegree.items() if d > 0]
        names = ", ".join(f"{p.name!r} (process {p.index})" for p in stuck[:6])
        more = f" and {len(stuck) - 6} more" if len(stuck) > 6 else ""
        raise ConfigError(f"the workflow has a cycle through {names}{more}", source=wf.source)
    return order


def build_dag(wf: Workflow) -> Dag:
    producer = _producers(wf)
    order = _process_order(wf, producer)
    instances: dict[int, int] = {}
    for sig in wf.inputs:
        data = wf.signals[sig].data
        instances[sig] = len(data) if data else 1
    first_task: dict[int, int] = {}
    firings: dict[int, int] = {}
    tasks: list[Task] = []
    for proc in order:
        count = min((instances.get(s, 0) for s in proc.ins), default=1)
        if proc.firing_limit is not None:
            count = min(count, proc.firing_limit)
        firings[proc.index] = count
        first_task[proc.index] = len(tasks)
        for k in range(count):
            deps = sorted({first_task[producer[s].index] + k for s in proc.ins if s in producer})
            tasks.append(Task(len(tasks), proc, k, deps))
        for sig in proc.outs:
            instances[sig] = count
    dependents: list[list[int]] = [[] for _ in tasks]
    for task in tasks:
        for dep in task.deps:
            dependents[dep].append(task.index)
    return Dag(wf, tasks, dependents)
