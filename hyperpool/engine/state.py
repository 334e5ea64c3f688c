"""Per-task bookkeeping of one run: what is waiting, in flight, done, failed or skipped.

Kept as flat lists indexed by task number (not one object per task) so a 20,000-task DAG
costs little memory, and every transition is O(1) plus the task's dependents.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hyperpool.engine.dag import Dag
from hyperpool.models import TaskResult

WAITING, READY, RETRY, DISPATCHED, DONE, FAILED, SKIPPED = range(7)
FINAL = (DONE, FAILED, SKIPPED)


@dataclass
class RunState:
    dag: Dag
    status: list[int] = field(default_factory=list)
    pending_deps: list[int] = field(default_factory=list)
    attempt: list[int] = field(default_factory=list)
    results: dict[int, TaskResult] = field(default_factory=dict)
    counts: Counter[int] = field(default_factory=Counter)
    duplicates: int = 0

    def __post_init__(self) -> None:
        tasks = self.dag.tasks
        self.pending_deps = [len(t.deps) for t in tasks]
        self.status = [READY if not t.deps else WAITING for t in tasks]
        self.attempt = [0] * len(tasks)
        self.counts = Counter(self.status)

    def set(self, index: int, status: int) -> None:
        self.counts[self.status[index]] -= 1
        self.status[index] = status
        self.counts[status] += 1

    def ready(self) -> list[int]:
        return [i for i, s in enumerate(self.status) if s == READY]

    def complete(self, index: int, result: TaskResult) -> list[int]:
        """Mark ``index`` done; return dependents that became ready."""
        self.set(index, DONE)
        self.results[index] = result
        released = []
        for dep in self.dag.dependents[index]:
            self.pending_deps[dep] -= 1
            if self.pending_deps[dep] == 0 and self.status[dep] == WAITING:
                self.set(dep, READY)
                released.append(dep)
        return released

    def skip_descendants(self, index: int) -> int:
        """Mark everything downstream of a failed task skipped (``--keep-going``)."""
        stack, skipped = list(self.dag.dependents[index]), 0
        while stack:
            i = stack.pop()
            if self.status[i] in (WAITING, READY):
                self.set(i, SKIPPED)
                skipped += 1
                stack.extend(self.dag.dependents[i])
        return skipped

    @property
    def finished(self) -> bool:
        return sum(self.counts[s] for s in FINAL) == len(self.status)

    def in_flight(self) -> int:
        return self.counts[DISPATCHED] + self.counts[RETRY]
