"""What the user sees of a run: live progress, the failure report and the JSON summary."""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from hyperpool import metrics
from hyperpool.engine.run import Engine, RunOutcome
from hyperpool.engine.state import DISPATCHED, DONE, FAILED, READY, RETRY, SKIPPED, WAITING
from hyperpool.errors import ConfigError
from hyperpool.executor.runner import LOG_DIR, log_stem
from hyperpool.wording import plural

TAIL_LINES = 15
TABLE_PER_SECOND = 4  # the live table's redraws, and so its rebuilds


def per_type_counts(engine: Engine) -> dict[str, dict[str, int]]:
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    names = {DONE: "done", FAILED: "failed", SKIPPED: "skipped", DISPATCHED: "running",
             RETRY: "running", READY: "queued", WAITING: "waiting"}
    for task, status in zip(engine.dag.tasks, engine.state.status, strict=True):
        rows[task.task_type][names[status]] += 1
    return rows


STATE_NAMES = {DONE: "done", FAILED: "failed", SKIPPED: "skipped", DISPATCHED: "running",
               RETRY: "retrying", READY: "queued", WAITING: "waiting"}


def per_state_counts(engine: Engine) -> dict[str, int]:
    return {name: engine.state.counts[state] for state, name in STATE_NAMES.items()}


class Progress:
    """A rich table per task type on a terminal; a log line every 10 s (or 10 %) otherwise."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last_line = 0.0
        self.last_done = -1
        self.last_table = 0.0
        self.live: Live | None = None

    def _table(self, engine: Engine) -> Table:
        table = Table(title=f"run {engine.run_id}")
        for col in ("task type", "model", "done", "running", "queued", "waiting", "failed"):
            table.add_column(col, justify="left" if col in ("task type", "model") else "right")
        for name, row in sorted(per_type_counts(engine).items()):
            table.add_row(name, engine.routing.model(name), *(str(row[c]) for c in
                          ("done", "running", "queued", "waiting", "failed")))
        done, total = engine.state.counts[DONE], len(engine.dag.tasks)
        table.caption = f"{done}/{total} done, ETA {self._eta(done, total)}"
        return table

    def _eta(self, done: int, total: int) -> str:
        elapsed = time.monotonic() - self.started
        if done == 0:
            return "?"
        return f"{elapsed / done * (total - done):.0f}s"

    def __call__(self, engine: Engine) -> None:
        for state, count in per_state_counts(engine).items():
            metrics.WORKFLOW_TASKS.labels(engine.dag.workflow.name, state).set(count)
        if self.tty:
            # The engine calls this after every read of the completion stream, and a table
            # counts every task: 4.9 ms per call for 20,000 tasks (measured), which a busy
            # run paid hundreds of times a second. Build it as often as it is drawn.
            now = time.monotonic()
            if self.live is None:
                self.live = Live(self._table(engine), console=Console(file=self.stream),
                                 refresh_per_second=TABLE_PER_SECOND)
                self.live.start()
            elif now - self.last_table >= 1 / TABLE_PER_SECOND:
                self.live.update(self._table(engine))
            else:
                return
            self.last_table = now
            return
        done, total = engine.state.counts[DONE], len(engine.dag.tasks)
        now = time.monotonic()
        step = max(1, total // 10)
        if done != self.last_done and (now - self.last_line >= 10 or done // step !=
                                       max(self.last_done, 0) // step or done == total):
            print(f"hyperpool: {done}/{plural(total, 'task')} done, "
                  f"{engine.state.in_flight()} in flight, "
                  f"{engine.state.counts[FAILED]} failed", file=self.stream, flush=True)
            self.last_line, self.last_done = now, done

    def close(self, engine: Engine | None = None) -> None:
        if self.live is not None:
            if engine is not None:
                self.live.update(self._table(engine))
            self.live.stop()


def summary(engine: Engine, outcome: RunOutcome) -> dict[str, Any]:
    durations: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for task in engine.dag.tasks:
        counts[task.task_type] += 1
        result = outcome.state.results.get(task.index)
        if result is not None and outcome.state.status[task.index] == DONE:
            durations[task.task_type].append(result.seconds)
    per_type = {
        name: {
            "model": engine.routing.model(name),
            "queue": engine.routing.queue(name),
            "count": count,
            "mean_seconds": (sum(durations[name]) / len(durations[name]))
            if durations[name] else None,
        }
        for name, count in sorted(counts.items())
    }
    state = outcome.state
    return {
        "run_id": outcome.run_id,
        "workflow": engine.dag.workflow.name,
        "tasks_total": len(engine.dag.tasks),
        "succeeded": state.counts[DONE],
        "failed": state.counts[FAILED],
        "skipped": state.counts[SKIPPED],
        "not_run": len(engine.dag.tasks) - state.counts[DONE] - state.counts[FAILED]
        - state.counts[SKIPPED],
        "duplicates_ignored": state.duplicates,
        "interrupted": outcome.interrupted,
        "makespan_seconds": round(outcome.finished - outcome.started, 3),
        "per_task_type": per_type,
    }


def failure_report(outcome: RunOutcome, work_dir: Path | None = None) -> str:
    """Each failed task: why, its stderr's tail, and where its whole logs are (when the
    executor wrote them in ``work_dir``: not for a task that never started)."""
    lines = []
    for f in outcome.failures:
        what = f.error or f"exit code {f.exit_code}"
        lines.append(f"task {f.task_type} ({f.task_id}) failed after "
                     f"{plural(f.attempts, 'attempt')}: {what}")
        tail = [ln for ln in f.stderr_tail.splitlines() if ln.strip()][-TAIL_LINES:]
        if tail and not (f.error and tail == [f.error]):
            lines.append("  stderr (tail):")
            lines.extend(f"    {ln}" for ln in tail)
        if work_dir is not None:
            stem = work_dir / LOG_DIR / log_stem(f.task_id, f.attempts)
            if stem.with_name(stem.name + ".stderr").exists():
                lines.append(f"  logs: {stem}.stdout, {stem}.stderr")
    return "\n".join(lines)


def write_summary(path: Path, data: dict[str, Any]) -> None:
    """Write the JSON summary; :class:`ConfigError` when it cannot be (the path was checked
    before the run, but a disk can fill up or a directory vanish while it runs)."""
    try:
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the JSON summary: {exc.strerror or exc}",
                          source=str(path)) from None
