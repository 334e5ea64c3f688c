"""The main job as a user runs it: ``examples/demo.py`` (``make run``), timed end to end.

A real Montage mosaic through autoscaled local pools that start at zero, for three sky sizes.
Each repeat runs the demo as ``make run`` does (engine, embedded pools, the job model) and
reads the run's own makespan from its JSON summary; the same sky's processes are also run one
by one with ``examples/montage/run_sequential.py`` (no engine, no broker, no pools: the
baseline in the same minutes), so the ratio says what hyperpool's parallelism gains or its
start-up costs on this machine. Runs are interleaved, and the load average is recorded beside
every run: on a shared 2-core machine the same run takes up to twice as long under load.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    bench_env,
    bench_settings,
    delete_queues,
    median,
    new_namespace,
    wait_quiet,
    workers,
)
from hyperpool.routing import EXECUTION_MODELS_FILE

SKIES = [(2, 2, 120), (3, 3, 160), (4, 3, 200)]  # (cols, rows, tile px); 4x3 is `make run`
DEMO = REPO / "examples" / "demo.py"
SEQUENTIAL = REPO / "examples" / "montage" / "run_sequential.py"


def _demo_once(out: Path, cols: int, rows: int, size: int) -> dict[str, Any]:
    namespace = new_namespace("demo")
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--out", str(out), "--cols", str(cols), "--rows",
         str(rows), "--size", str(size)],
        env=bench_env(namespace, out), capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    delete_queues(bench_settings(namespace, out), namespace + ".")
    if proc.returncode != 0:
        raise RuntimeError(f"demo {cols}x{rows} failed:\n{proc.stdout[-1500:]}"
                           f"{proc.stderr[-1500:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"makespan": summary["makespan_seconds"], "wall": wall, "load": load,
            "tasks": summary["tasks_total"]}


def _sequential_once(out: Path) -> float:
    """The processes of the workflow in ``out`` one by one (each overwrites its outputs)."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(SEQUENTIAL), str(out)], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"run_sequential failed:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return time.monotonic() - t0


WARM_SLOTS = 4  # per pooled type: as many workers as the local budget gives the pools


def _warm_once(out: Path) -> float:
    """The demo's workflow again, in ``out``, on pools already running: one warm worker per
    pooled type with WARM_SLOTS slots, ``--no-local-pools``; the job model as in the demo."""
    namespace = new_namespace("demow")
    pooled = [e["name"] for e in json.loads((out / EXECUTION_MODELS_FILE).read_text())]
    summary = out / "summary-warm.json"
    try:
        with workers([(f"{namespace}.{t}", WARM_SLOTS) for t in pooled], namespace=namespace,
                     work_dir=out):
            proc = subprocess.run(
                [sys.executable, "-m", "hyperpool", "run", str(out), "--no-local-pools",
                 "--json-summary", str(summary)],
                env=bench_env(namespace, out), capture_output=True, text=True, timeout=600)
    finally:
        delete_queues(bench_settings(namespace, out), namespace + ".")
    if proc.returncode != 0:
        raise RuntimeError(f"warm demo run failed:\n{proc.stderr[-1500:]}")
    return float(json.loads(summary.read_text())["makespan_seconds"])


def measure(repeats: int) -> list[dict[str, Any]]:
    if shutil.which("mProjectPP") is None:
        raise RuntimeError("Montage is not installed: run `make services`")
    rows = []
    base = Path(tempfile.mkdtemp(prefix="hyperpool-bench-demo-"))
    try:
        results: dict[tuple[int, int, int], dict[str, list[float]]] = {
            sky: {"makespan": [], "wall": [], "load": [], "sequential": [], "warm": []}
            for sky in SKIES}
        tasks: dict[tuple[int, int, int], int] = {}
        for _ in range(repeats):
            for sky in SKIES:  # interleaved: each size sees the same machine state
                wait_quiet()
                out = base / f"{sky[0]}x{sky[1]}"
                run = _demo_once(out, *sky)
                tasks[sky] = run["tasks"]
                for key in ("makespan", "wall", "load"):
                    results[sky][key].append(run[key])
                results[sky]["sequential"].append(_sequential_once(out))
                results[sky]["warm"].append(_warm_once(out))
        for sky in SKIES:
            rows.append({"cols": sky[0], "rows": sky[1], "size": sky[2], "tasks": tasks[sky],
                         **results[sky]})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return rows


def section(res: dict[str, Any]) -> list[str]:
    """The document's section on the demo (bench/markdown.py renders the rest)."""
    out = ["## The main job: `make run`", "",
           "`bench/demo.py`: `examples/demo.py` (what `make run` runs after its set-up) for three "
           "sky sizes, each run from zero pools, makespan from the run's JSON summary; "
           "*sequential*: the same sky's processes one at a time "
           "(`examples/montage/run_sequential.py`, no engine, broker or pools), in the same "
           "minutes; *warm*: the same workflow again on pools already running (one worker per "
           f"pooled type with {WARM_SLOTS} slots, `--no-local-pools`; goal: `make run` <= 1.5x "
           "warm). Load: the 1-minute load average when each run started.", "",
           "| sky | tasks | makespan, median (runs) | whole demo, median | sequential, median "
           "| sequential / makespan | warm, median (runs) | makespan / warm | load at start "
           "(runs) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["demo"]:
        runs = ", ".join(f"{v:.1f}" for v in r["makespan"])
        loads = ", ".join(f"{v:.1f}" for v in r["load"])
        ratio = median(r["sequential"]) / median(r["makespan"])
        label = f"{r['cols']}x{r['rows']}, {r['size']} px" + (
            " (`make run`)" if (r["cols"], r["rows"]) == (4, 3) else "")
        warm = r.get("warm") or []
        warm_cells = (f"{median(warm):.1f} s ({', '.join(f'{v:.1f}' for v in warm)}) | "
                      f"{median(r['makespan']) / median(warm):.2f}x" if warm else "— | —")
        out.append(f"| {label} | {r['tasks']} | {median(r['makespan']):.1f} s ({runs}) | "
                   f"{median(r['wall']):.1f} s | {median(r['sequential']):.1f} s | "
                   f"{ratio:.2f}x | {warm_cells} | {loads} |")
    return [*out, ""]
