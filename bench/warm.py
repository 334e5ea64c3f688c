"""Cold starts on the default path: pools from zero against pools already warm (issue 18).

Every row runs the whole ``hyperpool run`` command the way a user does, with local pools that
start at zero, in three variants measured in the same minutes, interleaved:

* **template + look-ahead** (the default): workers and jobs forked from the pre-imported
  template (:mod:`hyperpool.executor.template`), a warm worker for upcoming stages;
* **template only**: every pool's WorkerPool says ``lookAhead: false``;
* **fresh interpreters** (before): ``HYPERPOOL_FORK_TEMPLATE=0`` and no look-ahead.

Baselines in the same run: the same DAG on pre-started pools (``--no-local-pools``, one warm
worker per type with as many slots as its widest stage: bench/makespan.py's *pools-wide*), and
raw Celery (prefork, 2 processes, the same safety settings) for the flat throughput row.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import gen
from bench.common import (
    bench_env,
    bench_settings,
    delete_queues,
    median,
    new_namespace,
    wait_quiet,
    workflow_file,
)
from hyperpool.routing import EXECUTION_MODELS_FILE

VARIANTS = {
    "template + look-ahead": ({}, True),
    "template only": ({}, False),
    "fresh interpreters": ({"HYPERPOOL_FORK_TEMPLATE": "0"}, False),
}
MONTAGE = "montage143-143"
MONTAGE_TYPES = ["mProjectPP", "mDiffFit", "mConcatFit", "mBgModel", "mBackground", "mImgtbl",
                 "mAdd", "mShrink", "mJPEG"]
ENV = {"HF_VAR_function": "command"}


def _manifests(work: Path, types: list[str], look_ahead: bool) -> list[str]:
    """``--pools`` files giving each type's pool the look-ahead switch (defaults otherwise)."""
    args = []
    for task_type in types:
        path = work / f"pool-{task_type}.yaml"
        path.write_text(f"apiVersion: hyperflow.agh.edu.pl/v1\nkind: WorkerPool\nmetadata:\n"
                        f"  name: {task_type.lower()}\nspec:\n  taskType: {task_type}\n"
                        f"  image: unused\n  lookAhead: {str(look_ahead).lower()}\n")
        args += ["--pools", str(path)]
    return args


def _run(work: Path, namespace: str, *args: str, **env: str) -> dict[str, Any]:
    summary = work / "summary.json"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "hyperpool", "run", str(work), "--json-summary", str(summary),
         "--cooldown", "30", *args],
        env=bench_env(namespace, work, **ENV, **env), capture_output=True, text=True,
        timeout=900)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"hyperpool run {work.name} failed:\n{proc.stderr[-2000:]}")
    data = json.loads(summary.read_text())
    return {"makespan": float(data["makespan_seconds"]), "wall": wall}


def _workdir(workflow: dict[str, Any] | None, pooled: list[str]) -> Path:
    work = Path(tempfile.mkdtemp(prefix="hyperpool-bench-warm-"))
    if workflow is None:
        shutil.copy(workflow_file(MONTAGE), work / "workflow.json")
        (work / EXECUTION_MODELS_FILE).write_text(json.dumps([{"name": n} for n in pooled]))
        return work
    return gen.write(work, workflow, pooled)


def cold_variants(workflow: dict[str, Any] | None, types: list[str], repeats: int,
                  extra: tuple[str, ...] = ()) -> dict[str, list[dict[str, Any]]]:
    """Each variant ``repeats`` times, interleaved, local pools from zero."""
    out: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for variant, (env, look_ahead) in VARIANTS.items():
            wait_quiet()
            namespace = new_namespace("warm")
            work = _workdir(workflow, types)
            try:
                out[variant].append(_run(work, namespace, "--stub-sleep", "0", *extra,
                                         *_manifests(work, types, look_ahead), **env))
            finally:
                delete_queues(bench_settings(namespace, work), namespace + ".")
                shutil.rmtree(work, ignore_errors=True)
    return out


def warm_montage(repeats: int) -> list[float]:
    """montage143 with 0-s stubs on pre-started pools (pools-wide), ``--no-local-pools``."""
    from bench.makespan import WIDE, measure

    return measure([(MONTAGE, WIDE, 0.0, repeats)])[0].makespans


def zero_to_one(repeats: int) -> dict[str, list[float]]:
    """One task, pools at zero: its start minus its publish (bench/warm_probe.py), for a pool
    of a running supervisor (*settled*) and for a run's very first task (*first*), with the
    template and with fresh interpreters."""
    out: dict[str, list[float]] = {}
    for _ in range(repeats):
        for label, flag, env in (("settled, template", ["--settled"], {}),
                                 ("settled, fresh interpreters", ["--settled"],
                                  {"HYPERPOOL_FORK_TEMPLATE": "0"}),
                                 ("first, template", [], {}),
                                 ("first, fresh interpreters", [],
                                  {"HYPERPOOL_FORK_TEMPLATE": "0"})):
            wait_quiet()
            proc = subprocess.run(
                # -c, not -m: a forkserver child re-imports a __main__ module given by path or
                # name (bench.warm_probe and its imports); ``hyperpool``'s own __main__ is not.
                [sys.executable, "-c", "from bench.warm_probe import main; main()", *flag],
                capture_output=True,
                text=True, timeout=120,
                env=bench_env(new_namespace("w01"), Path(tempfile.gettempdir()), **env))
            if proc.returncode != 0:
                raise RuntimeError(f"zero-to-one probe failed:\n{proc.stderr[-2000:]}")
            out.setdefault(label, []).append(float(proc.stdout.split()[-1]))
    return out


def job_overhead(tasks: int, repeats: int) -> dict[str, list[float]]:
    """A chain of ``tasks`` ``true`` jobs (job model only): makespan per task, minus the
    command itself (``true`` run by subprocess from Python, measured alongside)."""
    out: dict[str, list[float]] = {"template": [], "fresh interpreters": [], "true": []}
    for _ in range(repeats):
        for label, env in (("template", {}), ("fresh interpreters",
                                              {"HYPERPOOL_FORK_TEMPLATE": "0"})):
            wait_quiet()
            work = _workdir(gen.chain(tasks), [])
            try:
                out[label].append(_run(work, new_namespace("wjob"), **env)["makespan"] / tasks)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        t0 = time.perf_counter()
        for _ in range(tasks):
            subprocess.run(["true"], check=True)
        out["true"].append((time.perf_counter() - t0) / tasks)
    return out


def flat_true(tasks: int, repeats: int) -> dict[str, list[float]]:
    """``tasks`` independent ``true`` tasks: whole ``hyperpool run`` from zero (tasks/s over
    the command's wall clock) against raw Celery, warm, 2 prefork processes, same safety."""
    from bench import celery_baseline as cb

    out: dict[str, list[float]] = {"hyperpool run": [], "raw Celery": []}
    home = Path(tempfile.mkdtemp(prefix="hyperpool-bench-celery-"))
    queue = new_namespace("wcel") + ".true"
    try:
        with cb.celery_worker(queue, concurrency=2, work_dir=home, safe=True):
            for _ in range(repeats):
                wait_quiet()
                out["raw Celery"].append(cb.throughput(cb.safe_true_cmd, queue, tasks))
                namespace = new_namespace("wflat")
                work = _workdir(gen.flat(tasks), ["task"])
                try:
                    result = _run(work, namespace)
                    out["hyperpool run"].append(tasks / result["wall"])
                finally:
                    delete_queues(bench_settings(namespace, work), namespace + ".")
                    shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return out


def forked_memory(count: int = 4, idle_seconds: float = 3.0) -> dict[str, float]:
    """``count`` idle workers forked from one template: RSS/PSS/USS per worker (MiB), and the
    template's own. PSS splits the pages the workers share with the template and each other."""
    import psutil

    from bench.common import consumers
    from bench.memory import MIB
    from hyperpool.local.workers import WorkerProcess

    namespace = new_namespace("wmem")
    work = Path(tempfile.mkdtemp(prefix="hyperpool-bench-wmem-"))
    settings = bench_settings(namespace, work)
    queue = f"{namespace}.idle"
    procs = [WorkerProcess.start("idle", queue, settings=settings, work_dir=work,
                                 log_dir=work) for _ in range(count)]
    try:
        deadline = time.monotonic() + 60
        while consumers(queue) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(idle_seconds)
        infos = [psutil.Process(w.pid).memory_full_info() for w in procs]
        server = psutil.Process(procs[0].pid).parent()
        tmpl = server.memory_full_info() if server is not None else None
        return {"workers": count, "rss": median([i.rss / MIB for i in infos]),
                "pss": median([i.pss / MIB for i in infos]),
                "uss": median([i.uss / MIB for i in infos]),
                "template_rss": tmpl.rss / MIB if tmpl else float("nan"),
                "template_pss": tmpl.pss / MIB if tmpl else float("nan")}
    finally:
        for w in procs:
            w.stop()
        for w in procs:
            w.proc.wait(timeout=30)
        delete_queues(settings, namespace + ".")
        shutil.rmtree(work, ignore_errors=True)


def measure(repeats: int, quick: bool = False) -> dict[str, Any]:
    res: dict[str, Any] = {}
    res["forked_memory"] = forked_memory()
    res["montage_warm"] = warm_montage(repeats)
    res["montage_cold"] = cold_variants(None, MONTAGE_TYPES, repeats)
    res["zero_to_one"] = zero_to_one(repeats)
    res["job_overhead"] = job_overhead(10 if quick else 20, repeats)
    res["flat_tasks"] = 500 if quick else 2000
    res["flat_true"] = flat_true(res["flat_tasks"], repeats)
    return res


def _med(values: list[float]) -> float:
    return median(values) if values else float("nan")


def section(res: dict[str, Any]) -> list[str]:
    """The document's section (bench/markdown.py renders the rest)."""
    w = res["warm"]
    warm = _med(w["montage_warm"])
    out = ["## Cold starts: pools from zero vs warm (issue 18)", "",
           __doc__.split("\n\n", 1)[1].strip(), "",
           f"**{MONTAGE}, 0-s stubs, every type pooled** (9 stages). Warm baseline: "
           f"{warm:.2f} s ({', '.join(f'{v:.2f}' for v in w['montage_warm'])}). Goal: "
           f"makespan <= 1.5 x warm + 0.5 s = {1.5 * warm + 0.5:.2f} s.", "",
           "| variant | makespan, median (runs) | whole command | / warm | cold penalty per "
           "stage |", "|---|---|---|---|---|"]
    for variant, runs in w["montage_cold"].items():
        m = _med([r["makespan"] for r in runs])
        each = ", ".join(f"{r['makespan']:.2f}" for r in runs)
        out.append(f"| {variant} | {m:.2f} s ({each})"
                   f" | {_med([r['wall'] for r in runs]):.2f} s | {m / warm:.1f}x | "
                   f"{(m - warm) / 9 * 1000:.0f} ms |")
    out += ["", "**0 -> 1** (one task, pool at zero, its start minus its publish; *settled*: "
            "the supervisor has run a second, as for any stage after the first; *first*: the "
            "run's first task, published as the pools start). Goal <= 0.2 s.", "",
            "| case | median | runs |", "|---|---|---|"]
    for label, runs in w["zero_to_one"].items():
        out.append(f"| {label} | {_med(runs):.3f} s | {', '.join(f'{v:.3f}' for v in runs)} |")
    out.append("")
    j = w["job_overhead"]
    true = _med(j["true"])
    out += ["**Job model start overhead** (a chain of `true` jobs; per task, minus `true` "
            f"itself, {true * 1000:.1f} ms): template {(_med(j['template']) - true) * 1000:.0f}"
            f" ms, fresh interpreters {(_med(j['fresh interpreters']) - true) * 1000:.0f} ms; "
            "goal <= 50 ms.", ""]
    if "forked_memory" in w:
        m = w["forked_memory"]
        out += [f"**Memory**: {m['workers']} idle workers forked from one template, per worker "
                f"(median): RSS {m['rss']:.1f} MiB, PSS {m['pss']:.1f} MiB, USS {m['uss']:.1f} "
                f"MiB; the template itself RSS {m['template_rss']:.1f} MiB, PSS "
                f"{m['template_pss']:.1f} MiB (goal 7's fresh worker: see Memory above).", ""]
    f = w["flat_true"]
    hp, raw = _med(f["hyperpool run"]), _med(f["raw Celery"])
    hp_runs = ", ".join(f"{v:.0f}" for v in f["hyperpool run"])
    raw_runs = ", ".join(f"{v:.0f}" for v in f["raw Celery"])
    out += [f"**Flat throughput**: {w['flat_tasks']} `true` tasks, whole `hyperpool run` "
            f"from zero pools {hp:.0f} tasks/s ({hp_runs}) vs raw Celery warm {raw:.0f} "
            f"({raw_runs})"
            f" = {hp / raw:.2f}x; goal >= 1.0x.", ""]
    return out
