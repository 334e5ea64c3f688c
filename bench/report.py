"""Turning one benchmark run's numbers into docs/benchmarks.md and its PNG plots.

Everything in the document is computed from the run's results (medians of the repeated runs,
ratios, goal verdicts); nothing is typed in by hand, so re-running ``python -m bench``
rewrites it. Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402

from bench.common import median, percentile  # noqa: E402


def plot_throughput(res: dict[str, Any], path: Path) -> None:
    pubs = res.get("publishers") or {}
    fig, axes = plt.subplots(1, 2 if pubs else 1, figsize=(11 if pubs else 7, 4),
                             gridspec_kw={"width_ratios": [2, 1.3]} if pubs else None,
                             squeeze=False)
    ax = axes[0][0]
    groups = [(k, t) for k, t in (("noop", "no-op task"), ("command", "`true` command"))
              if k in res]
    sides = (("hyperpool", "tab:blue", "hyperpool, 2 workers x 1 slot"),
             ("hyperpool_threads", "tab:cyan", "hyperpool, 1 worker x 2 slot threads"),
             ("celery_safe", "tab:red", "raw Celery, same safety"),
             ("celery", "tab:orange", "raw Celery, defaults"))
    for g, (key, _title) in enumerate(groups):
        present = [x for x in sides if res[key].get(x[0])]
        for s, (side, color, label) in enumerate(present):
            values = res[key][side]
            x = g + (s - (len(present) - 1) / 2) * 0.2
            ax.bar(x, median(values), width=0.19, color=color, alpha=0.8,
                   label=label if g == 0 else None)
            ax.scatter([x] * len(values), values, color="black", s=10, zorder=3)
        base = res[key].get("celery_safe") or res[key]["celery"]
        ratio = median(res[key]["hyperpool"]) / median(base)
        ax.annotate(f"{ratio:.2f}x", (g, max(median(res[key][x[0]]) for x in present)),
                    ha="center", va="bottom", xytext=(0, 8), textcoords="offset points")
    ax.set_xticks(range(len(groups)), [t for _, t in groups])
    ax.set_ylim(top=ax.get_ylim()[1] * 1.12)
    ax.set_ylabel("tasks / s (bars: median, dots: runs)")
    ax.set_title("two task processes each side (ratio: 2 x 1 vs same safety)")
    ax.legend(loc="lower right", fontsize=7)
    if pubs:
        right = axes[0][1]
        for i, values in enumerate(pubs.values()):
            right.barh(i, median(values), color="tab:blue", alpha=0.4 + 0.2 * (i == 0))
            right.scatter(values, [i] * len(values), color="black", s=10, zorder=3)
        right.set_yticks(range(len(pubs)), list(pubs), fontsize=8)
        right.invert_yaxis()
        right.set_xlabel("no-op tasks / s")
        right.set_title("hyperpool by publisher variant")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(res: dict[str, Any], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for side, color, label in (("hyperpool", "tab:blue", "hyperpool (publish -> engine)"),
                               ("celery_safe", "tab:red", "raw Celery, same safety"),
                               ("celery", "tab:orange", "raw Celery, defaults")):
        if not res["latency"].get(side):
            continue
        values = sorted(v * 1e3 for v in res["latency"][side])
        left.hist(values, bins=60, range=(0, max(10.0, percentile(values, 99))), alpha=0.55,
                  color=color, label=label)
        right.plot(values, [i / len(values) for i in range(1, len(values) + 1)], color=color,
                   label=label)
    left.set_xlabel("ms")
    left.set_ylabel("tasks")
    left.set_title("Idle single-task latency")
    left.legend(fontsize=8)
    right.set_xscale("log")
    right.xaxis.set_major_formatter(ScalarFormatter())
    right.set_xticks([0.5, 1, 2, 3, 5, 10, 20])
    right.set_xlabel("ms (log scale; lines: 3 ms and 10 ms goals)")
    right.set_ylabel("fraction of tasks")
    right.set_title("CDF")
    for q, style in ((3, "--"), (10, ":")):
        right.axvline(q, color="gray", linestyle=style, linewidth=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_makespan(rows: list[Any], path: Path) -> None:
    rows = [r for r in rows if r.stub > 0]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(9, 4))
    labels = [f"{r.workflow.replace('legacy-montage-', 'lm-')}\n{r.config}" for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.27 for x in xs], [median(r.makespans) for r in rows], width=0.27,
           label="measured (median)", color="tab:blue")
    ax.bar(list(xs), [r.simulated for r in rows], width=0.27, label="zero-overhead schedule",
           color="tab:green")
    ax.bar([x + 0.27 for x in xs], [r.ideal for r in rows], width=0.27,
           label="ideal bound", color="tab:gray")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("makespan, s")
    ax.set_title(f"Montage makespan, {rows[0].stub:g} s stubs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(res: dict[str, Any], doc: Path) -> None:
    """Write ``doc`` (Markdown) and its plots next to it."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    plots = []
    for name, fn, key in (("bench-throughput.png", plot_throughput, "noop"),
                          ("bench-latency.png", plot_latency, "latency"),
                          ("bench-makespan.png", plot_makespan, "makespan")):
        if key in res:
            fn(res[key] if key == "makespan" else res, doc.parent / name)
            plots.append(name)
    from bench.markdown import render  # the tables, section by section

    doc.write_text(render(res, plots))
