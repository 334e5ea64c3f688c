"""Look-ahead demand: per queue, the tasks that arrive as soon as the running ones finish.

A pool that scales on its queue alone starts its first worker only once that queue has a
message; with Montage's nine stages of distinct task types, every stage then waits for a cold
start. The engine knows better: a task whose predecessors are all dispatched is *upcoming* — it
becomes ready when they finish. The counts go to Redis for every supervisor
(:mod:`hyperpool.demand`) and to the engine's ``hyperpool_engine_upcoming_tasks`` gauge.

Counting is incremental (a 20,000-task DAG is not scanned per dispatch): each task's number of
predecessors not yet dispatched drops as they are dispatched; at zero the task is counted, and
it stops counting when it becomes ready (its message is then in the queue itself).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from hyperpool.engine.dag import Dag
from hyperpool.engine.state import READY, WAITING, RunState
from hyperpool.routing import Routing


class Upcoming:
    """The upcoming count per queue of one run (see the module docstring)."""

    def __init__(self, deps: Sequence[Sequence[int]], dependents: Sequence[Sequence[int]],
                 queues: Sequence[str | None], dispatched: Callable[[int], bool]):
        self.dependents = dependents
        self.queues = queues
        self._seen = [dispatched(i) for i in range(len(deps))]
        self._unresolved = [sum(not self._seen[d] for d in ds) for ds in deps]
        self._counted = [False] * len(deps)
        self.counts: Counter[str] = Counter()
        for index, seen in enumerate(self._seen):
            if not seen and deps[index] and self._unresolved[index] == 0:
                self._count(index)

    def _count(self, index: int) -> None:
        queue = self.queues[index]
        if queue is not None:
            self._counted[index] = True
            self.counts[queue] += 1

    def dispatched(self, index: int) -> None:
        """``index`` went out (first attempt): its dependents may now be upcoming."""
        self.left([index])
        if self._seen[index]:
            return
        self._seen[index] = True
        for dep in self.dependents[index]:
            self._unresolved[dep] -= 1
            if self._unresolved[dep] == 0 and not self._seen[dep]:
                self._count(dep)

    def left(self, indexes: Iterable[int]) -> None:
        """These tasks are ready, dispatched or skipped: no longer upcoming."""
        for index in indexes:
            if self._counted[index]:
                self._counted[index] = False
                queue = self.queues[index]
                assert queue is not None
                self.counts[queue] -= 1


def for_run(dag: Dag, routing: Routing, state: RunState) -> Upcoming:
    """The counter of a run, from its state (a resumed run counts what it has dispatched)."""
    return Upcoming([t.deps for t in dag.tasks], dag.dependents,
                    [routing.queue(t.task_type) for t in dag.tasks],
                    lambda i: state.status[i] not in (WAITING, READY))
