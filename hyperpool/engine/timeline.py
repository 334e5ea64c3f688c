"""The workflow timeline: a Gantt chart of tasks per worker, coloured by task type.

HyperFlow users draw this by hand from executor logs to see where a run spent its time: idle
workers, a long tail, one stage waiting on another, a pool that scaled up too late. The engine
already holds every task's worker, start and end (the executors' :class:`TaskResult`), so
``hyperpool run --timeline FILE`` draws it without logs: ``.png`` through matplotlib, or
``.html``, a self-contained page (no script, no network) with one element per task whose
tooltip names the task, its worker and its duration.

Lanes (the y axis) are workers: a pool worker is one slot (thread) of a pool process
(``host:pid/slot``), so a lane is one slot of the pool and gaps in it are idle time. A
job-model task runs in a fresh process (locally) or Pod (Kubernetes), so its worker id is
unique and one lane per task would make 20,000 lanes of one bar each; job-model tasks are
therefore packed into "job slot" lanes (greedy interval partitioning, so there are exactly as
many slots as jobs ever ran at once, i.e. at most ``--max-jobs``). Their real worker id stays
in the tooltip.

Times are the executors' wall clocks; on several machines they must be NTP-synchronised or
lanes of different hosts shift against each other. Only each task's last attempt is drawn (the
engine keeps one result per task). Drawing is vectorised: one ``PolyCollection`` for all bars
(plus one for the failed ones' hatching), so 20,000 tasks take about a second.
"""

from __future__ import annotations

import colorsys
import heapq
import html
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperpool.engine.outputs import check_output_file
from hyperpool.errors import ConfigError
from hyperpool.wording import plural

SUFFIXES = (".png", ".html")
JOB_MODEL = "job"
# matplotlib's tab10 then tab20's lighter shades: distinguishable and colour-blind friendlier
# than a rainbow; further types get golden-angle hues.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
           "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
MAX_LABELLED_LANES = 80


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One finished task as the timeline needs it (times in seconds since the epoch)."""

    task_id: str
    task_type: str
    worker: str
    started: float
    finished: float
    model: str = "pool"
    ok: bool = True

    @classmethod
    def coerce(cls, item: TaskRecord | Mapping[str, Any] | Any) -> TaskRecord:
        """Accept a record, a dict, or any object with the same attributes."""
        if isinstance(item, TaskRecord):
            return item
        get = item.get if isinstance(item, Mapping) else (lambda k, d=None: getattr(item, k, d))
        missing = [k for k in ("task_id", "task_type", "worker", "started", "finished")
                   if get(k) is None]
        if missing:
            raise ValueError(f"timeline record {item!r} lacks {', '.join(missing)}")
        return cls(str(get("task_id")), str(get("task_type")), str(get("worker")),
                   float(get("started")), float(get("finished")),
                   str(get("model", "pool") or "pool"), bool(get("ok", True)))


@dataclass
class Layout:
    """Where each record goes: its lane, the lanes' names, the time origin and colours."""

    records: list[TaskRecord]
    lane_of: list[int]  # parallel to ``records``
    lanes: list[str]
    start: float
    span: float
    colours: dict[str, str]


def records_from_run(engine: Any, outcome: Any) -> list[TaskRecord]:
    """One record per task the run finished (succeeded, or failed after its last attempt).

    ``outcome.state.results`` maps task index -> the accepted :class:`TaskResult`; processes
    without an executor (HyperFlow ``exit``) get a ``model == "none"`` result from the engine
    itself and ran nowhere, so they are not drawn. Skipped and never-dispatched tasks have no
    result at all.
    """
    tasks = engine.dag.tasks
    records = [TaskRecord(r.task_id, tasks[i].task_type, r.worker, r.started, r.finished,
                          r.model, r.ok)
               for i, r in outcome.state.results.items() if r.model != "none"]
    records.sort(key=lambda r: r.started)
    return records


def palette(n: int) -> list[str]:
    """``n`` distinct colours: the fixed palette first, then golden-angle hues."""
    colours = list(PALETTE[:n])
    for i in range(len(colours), n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.55, 0.85)
        colours.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return colours


def layout(items: Iterable[TaskRecord | Mapping[str, Any] | Any]) -> Layout:
    """Assign lanes: pool workers by task type then first start; job tasks packed into slots."""
    records = sorted((TaskRecord.coerce(x) for x in items), key=lambda r: (r.started, r.task_id))
    if not records:
        raise ValueError("no records")
    start = records[0].started
    span = max(max(r.finished for r in records) - start, 1e-3)
    first: dict[str, float] = {}
    kind: dict[str, str] = {}
    type_first: dict[str, float] = {}
    for r in records:
        type_first.setdefault(r.task_type, r.started)
        if r.model != JOB_MODEL:
            first.setdefault(r.worker, r.started)
            kind.setdefault(r.worker, r.task_type)
    workers = sorted(first, key=lambda w: (type_first[kind[w]], first[w], w))
    lanes = list(workers)
    index = {w: i for i, w in enumerate(workers)}
    free: list[tuple[float, int]] = []  # (time the slot becomes free, slot number)
    slots = 0
    lane_of = []
    for r in records:
        if r.model != JOB_MODEL:
            lane_of.append(index[r.worker])
            continue
        if free and free[0][0] <= r.started:
            _, slot = heapq.heappop(free)
        else:
            slot, slots = slots, slots + 1
            lanes.append(f"job slot {slot + 1}")
        heapq.heappush(free, (max(r.finished, r.started), slot))
        lane_of.append(len(workers) + slot)
    types = sorted({r.task_type for r in records}, key=lambda t: (type_first[t], t))
    return Layout(records, lane_of, lanes, start, span, dict(zip(types, palette(len(types)),
                                                                 strict=True)))


def _summary(lay: Layout, title: str) -> str:
    failed = sum(not r.ok for r in lay.records)
    return (f"{title}: {plural(len(lay.records), 'task')} on {plural(len(lay.lanes), 'lane')}, "
            "makespan "
            f"{lay.span:.1f} s" + (f", {failed} failed" if failed else ""))


def write_png(lay: Layout, path: Path, title: str) -> None:
    """Render with matplotlib's object API (no pyplot: no global figure state, no backend)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    n_lanes = len(lay.lanes)
    fig = Figure(figsize=(13, min(max(3.0, 1.5 + 0.22 * n_lanes), 40)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x0 = np.fromiter((r.started - lay.start for r in lay.records), float, len(lay.records))
    dur = np.fromiter((r.finished - r.started for r in lay.records), float, len(lay.records))
    x1 = x0 + np.maximum(dur, lay.span / 1500)  # at least about one pixel wide
    y = np.asarray(lay.lane_of, dtype=float)
    verts = np.stack([np.column_stack([x0, y - 0.4]), np.column_stack([x0, y + 0.4]),
                      np.column_stack([x1, y + 0.4]), np.column_stack([x1, y - 0.4])], axis=1)
    colours = [lay.colours[r.task_type] for r in lay.records]
    ax.add_collection(PolyCollection(verts, facecolors=colours, edgecolors="none",
                                     linewidths=0))
    failed = np.fromiter((not r.ok for r in lay.records), bool, len(lay.records))
    if failed.any():
        ax.add_collection(PolyCollection(verts[failed], facecolors="none", edgecolors="black",
                                         linewidths=0.6, hatch="////"))
    ax.set_xlim(0, lay.span * 1.01)
    ax.set_ylim(n_lanes - 0.5, -0.5)
    step = max(1, math.ceil(n_lanes / MAX_LABELLED_LANES))
    ax.set_yticks(range(0, n_lanes, step))
    ax.set_yticklabels(lay.lanes[::step], fontsize=7)
    ax.set_xlabel("seconds since the first task started")
    ax.set_ylabel("worker")
    ax.set_title(_summary(lay, title), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    counts = Counter(r.task_type for r in lay.records)
    handles = [Patch(color=c, label=f"{t} ({counts[t]})") for t, c in lay.colours.items()]
    if failed.any():
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="////",
                             label=f"failed ({int(failed.sum())})"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8,
              title="task type", title_fontsize=8)
    fig.savefig(path, format="png", bbox_inches="tight")


HTML_STYLE = (
    "body{font:13px system-ui,sans-serif;margin:1em}h1{font-size:16px}"
    ".lane{display:flex;align-items:center;height:14px}"
    ".w{width:16em;flex:none;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;"
    "font:10px monospace;padding-right:.5em;text-align:right}"
    ".bars{position:relative;flex:1;height:12px;background:#f4f4f4}"
    ".t{position:absolute;top:0;height:12px;min-width:1px}"
    ".t[data-failed]{outline:1px solid #000;background-image:repeating-linear-gradient("
    "45deg,transparent 0 2px,rgba(0,0,0,.45) 2px 3px)}"
    ".axis{position:relative;height:16px;margin-left:16.5em;font-size:10px;color:#555}"
    ".axis span{position:absolute;transform:translateX(-50%)}"
    ".sw{display:inline-block;width:1em;height:1em;vertical-align:middle;margin:0 .3em 0 1em}"
)


def write_html(lay: Layout, path: Path, title: str) -> None:
    """One ``<div class="t">`` per task (tests and users can count them), lanes as rows."""
    esc = html.escape
    kinds = {t: i for i, t in enumerate(lay.colours)}
    style = HTML_STYLE + "".join(f'.t[data-k="{i}"]{{background:{c}}}'
                                 for i, c in enumerate(lay.colours.values()))
    rows: list[list[str]] = [[] for _ in lay.lanes]
    for r, lane in zip(lay.records, lay.lane_of, strict=True):
        left = 100 * (r.started - lay.start) / lay.span
        width = 100 * max(r.finished - r.started, 0.0) / lay.span
        tip = esc(f"{r.task_type} {r.task_id} on {r.worker}: {r.finished - r.started:.3f} s "
                  f"from +{r.started - lay.start:.3f} s ({r.model}"
                  f"{'' if r.ok else ', failed'})")
        rows[lane].append(f'<div class="t" data-k="{kinds[r.task_type]}"'
                          f'{"" if r.ok else " data-failed"} style="left:{left:.3f}%;'
                          f'width:{width:.3f}%" title="{tip}"></div>')
    ticks = "".join(f'<span style="left:{100 * i / 10:.0f}%">{lay.span * i / 10:.1f} s</span>'
                    for i in range(11))
    counts = Counter(r.task_type for r in lay.records)
    legend = "".join(f'<span class="sw" style="background:{c}"></span>{esc(t)} ({counts[t]})'
                     for t, c in lay.colours.items())
    body = "".join(f'<div class="lane"><span class="w" title="{esc(name)}">{esc(name)}</span>'
                   f'<div class="bars">{"".join(row)}</div></div>'
                   for name, row in zip(lay.lanes, rows, strict=True))
    path.write_text(
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{esc(title)}</title>"
        f"<style>{style}</style><h1>{esc(_summary(lay, title))}</h1><p>{legend}</p>"
        f"<div class=axis>{ticks}</div>{body}<div class=axis>{ticks}</div></html>\n",
        encoding="utf-8")


def check_timeline_path(path: str | Path) -> Path:
    """Validate the output name before a run starts, so a typo does not cost the whole run."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError("the timeline must be a .png or .html file", source=str(path))
    if path.suffix.lower() == ".png":
        try:
            import matplotlib  # noqa: F401  (only in the dev extra; .html needs nothing)
        except ImportError:
            raise ConfigError("a .png timeline needs matplotlib (pip install matplotlib); "
                              "or write .html, which needs nothing", source=str(path)) from None
    return check_output_file(path, what="timeline")


def write_timeline(records: Sequence[TaskRecord | Mapping[str, Any] | Any], path: str | Path,
                   *, title: str) -> int:
    """Draw ``records`` as a Gantt chart into ``path`` (``.png`` or ``.html``).

    Records may be :class:`TaskRecord`, dicts or objects with ``task_id``, ``task_type``,
    ``worker``, ``started``, ``finished`` and optionally ``model`` and ``ok``. Returns the
    number of tasks drawn.
    """
    path = check_timeline_path(path)
    if not records:
        raise ConfigError("no task ran, so there is no timeline to draw", source=str(path))
    lay = layout(records)
    try:
        if path.suffix.lower() == ".png":
            write_png(lay, path, title)
        else:
            write_html(lay, path, title)
    except OSError as exc:
        raise ConfigError(f"cannot write the timeline: {exc.strerror or exc}",
                          source=str(path)) from None
    return len(lay.records)
