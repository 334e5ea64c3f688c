"""The workflow timeline: a Gantt chart of tasks per worker, coloured by task type.

HyperFlow users draw this by hand from executor logs to see where a run spent its time (idle
workers, a long tail, a stage waiting on another). The engine already has every task's worker,
start and end in its results, so ``hyperpool run --timeline FILE`` draws it: ``.png`` via
matplotlib (one ``broken_barh`` per worker and type, fast for 20,000 tasks) or ``.html`` (a
self-contained page, one element per task, with the task id in its tooltip).
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperpool.errors import ConfigError

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac"]


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    task_type: str
    worker: str
    started: float
    finished: float
    model: str
    ok: bool


def records_from_run(engine: Any, outcome: Any) -> list[TaskRecord]:
    """One record per task the run finished (succeeded or failed), from the engine's results."""
    records = []
    for index, result in outcome.state.results.items():
        task = engine.dag.tasks[index]
        if result.model == "none":
            continue  # exit/no-executor processes never ran anywhere
        records.append(TaskRecord(result.task_id, task.task_type, result.worker,
                                  result.started, result.finished, result.model, result.ok))
    return records


def _colours(records: Sequence[TaskRecord]) -> dict[str, str]:
    types = sorted({r.task_type for r in records})
    return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(types)}


def _lanes(records: Sequence[TaskRecord]) -> list[str]:
    first: dict[str, float] = {}
    for r in records:
        first[r.worker] = min(first.get(r.worker, r.started), r.started)
    return sorted(first, key=lambda w: (first[w], w))


def write_png(records: Sequence[TaskRecord], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    start = min(r.started for r in records)
    lanes = _lanes(records)
    row = {w: i for i, w in enumerate(lanes)}
    colours = _colours(records)
    bars: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        bars[(r.worker, r.task_type)].append((r.started - start, max(r.finished - r.started,
                                                                      1e-3)))
    height = min(0.5 + 0.25 * len(lanes), 40)
    fig, ax = plt.subplots(figsize=(12, max(3.0, height)))
    for (worker, task_type), spans in bars.items():
        ax.broken_barh(spans, (row[worker] - 0.4, 0.8), facecolors=colours[task_type])
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels(lanes if len(lanes) <= 60 else [""] * len(lanes), fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first task started")
    ax.set_ylabel("worker")
    ax.set_title(f"{title}: {len(records)} tasks on {len(lanes)} workers")
    ax.legend(handles=[Patch(color=c, label=t) for t, c in colours.items()],
              loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_html(records: Sequence[TaskRecord], path: Path, title: str) -> None:
    start = min(r.started for r in records)
    span = max(max(r.finished for r in records) - start, 1e-3)
    lanes = _lanes(records)
    row = {w: i for i, w in enumerate(lanes)}
    colours = _colours(records)
    items = []
    for r in records:
        left = 100 * (r.started - start) / span
        width = max(100 * (r.finished - r.started) / span, 0.05)
        tip = html.escape(f"{r.task_type} {r.task_id} on {r.worker}: "
                          f"{r.finished - r.started:.3f}s ({r.model}{'' if r.ok else ', failed'})")
        items.append(f'<div class="t" title="{tip}" style="top:{row[r.worker] * 14}px;'
                     f'left:{left:.3f}%;width:{width:.3f}%;background:{colours[r.task_type]}">'
                     "</div>")
    legend = " ".join(f'<span style="background:{c}">&nbsp;&nbsp;</span> {html.escape(t)}'
                      for t, c in colours.items())
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>" + html.escape(title) + "</title>"
        "<style>.lane{position:relative;height:" + str(14 * len(lanes)) + "px;"
        "border:1px solid #ccc}.t{position:absolute;height:12px}</style>"
        f"<h1>{html.escape(title)}</h1><p>{len(records)} tasks on {len(lanes)} workers, "
        f"{span:.2f}s</p><p>{legend}</p><div class=lane>" + "".join(items) + "</div>\n",
        encoding="utf-8")


def write_timeline(records: Sequence[TaskRecord], path: Path, *, title: str) -> None:
    """Write ``records`` as a Gantt chart to ``path`` (``.png`` or ``.html``)."""
    if path.suffix.lower() not in (".png", ".html"):
        raise ConfigError("the timeline must be a .png or .html file", source=str(path))
    if not records:
        raise ConfigError("no task ran, so there is no timeline to draw", source=str(path))
    if path.suffix.lower() == ".png":
        write_png(records, path, title)
    else:
        write_html(records, path, title)
