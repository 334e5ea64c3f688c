"""Memory (goal 7): an idle pool process, and the engine's cost per task of a big DAG.

* Idle pool: ``hyperpool worker`` at concurrency 1 and 2, measured with psutil once it
  consumes its queue and has been idle for a moment. RSS summed over the main process and its
  prefork children is the goal's metric; because children are forked from the main process
  they share most pages with it, so the sum over-counts, and PSS (each shared page divided
  among the processes that map it) and USS (pages private to each) are shown beside it.
* Engine: a fresh interpreter loads the workflow, expands the DAG and builds the
  :class:`Engine` (the state a ``hyperpool run`` holds before its first dispatch), then feeds
  every task a success through the engine's own completion path (``_on_result``), so the
  retained results are included. tracemalloc counts the Python objects per task; the RSS
  growth of the process is shown too.

    python -m bench.memory trace|rss WORKFLOW.json   # one JSON line (what engine_memory runs)
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import psutil

from bench.common import REPO, bench_settings, delete_queues, new_namespace, workers
from bench.gen import layered, write

MIB = 2**20


def family_memory(pid: int) -> dict[str, float]:
    """RSS/PSS/USS (MiB) of process ``pid`` plus its children."""
    main = psutil.Process(pid)
    family = [main, *main.children(recursive=True)]
    infos = [p.memory_full_info() for p in family]
    return {"processes": len(family), "rss": sum(i.rss for i in infos) / MIB,
            "pss": sum(i.pss for i in infos) / MIB, "uss": sum(i.uss for i in infos) / MIB,
            "main_rss": infos[0].rss / MIB}


def pool_memory(concurrency: int, idle_seconds: float = 3.0) -> dict[str, float]:
    """Memory of an idle ``hyperpool worker -c N`` (main process plus prefork children)."""
    namespace = new_namespace()
    work = Path(tempfile.mkdtemp(prefix="hyperpool-bench-mem-"))
    try:
        with workers([(f"{namespace}.idle", concurrency)], namespace=namespace,
                     work_dir=work) as procs:
            time.sleep(idle_seconds)
            return family_memory(procs[0].proc.pid)
    finally:
        delete_queues(bench_settings(namespace, work), namespace + ".")
        shutil.rmtree(work, ignore_errors=True)


def celery_memory(concurrency: int, idle_seconds: float = 3.0) -> dict[str, float]:
    """The same for the raw Celery baseline's worker, for reference."""
    from bench.celery_baseline import celery_worker

    namespace = new_namespace()
    work = Path(tempfile.mkdtemp(prefix="hyperpool-bench-mem-"))
    try:
        with celery_worker(f"{namespace}.raw", concurrency=concurrency, work_dir=work) as proc:
            time.sleep(idle_seconds)
            return family_memory(proc.proc.pid)
    finally:
        delete_queues(bench_settings(namespace, work), namespace + ".")
        shutil.rmtree(work, ignore_errors=True)


def _engine_footprint(workflow: Path, trace: bool) -> dict[str, float]:
    """Runs in a fresh interpreter (see ``engine_memory``).

    tracemalloc's own bookkeeping inflates RSS, so RSS is measured in a run without it.
    """
    if trace:
        tracemalloc.start()
    from hyperpool.engine.dag import build_dag
    from hyperpool.engine.loader import load_workflow
    from hyperpool.engine.run import Engine, RunOptions
    from hyperpool.engine.state import DISPATCHED
    from hyperpool.models import TaskResult
    from hyperpool.routing import Routing
    from hyperpool.services import redis_client
    from hyperpool.settings import load_settings

    settings = load_settings()
    client = redis_client(settings)
    gc.collect()
    base, _ = tracemalloc.get_traced_memory()
    rss_base = psutil.Process().memory_info().rss
    rss_loaded = rss_base
    dag = build_dag(load_workflow(workflow, env={"HF_VAR_function": "command"}))
    engine = Engine(dag, Routing("bench", {}), settings,
                    RunOptions(work_dir=workflow.parent, run_id="bench-memory"), client)
    gc.collect()
    loaded, peak = tracemalloc.get_traced_memory()
    rss_loaded = psutil.Process().memory_info().rss
    now = time.time()
    for task in dag.tasks:  # dependency order: every task's inputs are done first
        engine.state.set(task.index, DISPATCHED)
        engine.dispatched_at[task.index] = now
        engine._on_result(TaskResult(task_id=engine.task_id(task), exit_code=0, started=now,
                                     finished=now, worker="bench:1", model="pool"))
    assert engine.state.finished
    gc.collect()
    finished, peak2 = tracemalloc.get_traced_memory()
    tasks = len(dag.tasks)
    rss = psutil.Process().memory_info().rss
    if not trace:
        return {"tasks": tasks, "rss_loaded_mib": (rss_loaded - rss_base) / MIB,
                "rss_finished_mib": (rss - rss_base) / MIB, "rss_total_mib": rss / MIB,
                "rss_bytes_per_task": (rss - rss_base) / tasks}
    return {"tasks": tasks, "loaded_bytes_per_task": (loaded - base) / tasks,
            "finished_bytes_per_task": (finished - base) / tasks,
            "loaded_mib": (loaded - base) / MIB, "finished_mib": (finished - base) / MIB,
            "peak_mib": (max(peak, peak2) - base) / MIB}


def engine_memory(workflow: Path) -> dict[str, float]:
    """The engine's footprint for ``workflow``: one fresh interpreter with, one without trace."""
    found: dict[str, float] = {}
    for mode in ("trace", "rss"):
        out = subprocess.run([sys.executable, "-m", "bench.memory", mode, str(workflow)],
                             capture_output=True, text=True, timeout=600, cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        found.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return found


def generated_dag(tasks: int = 20_000, width: int = 500) -> Path:
    """A layered DAG of ``tasks`` tasks (``width`` per layer, two inputs each)."""
    work = Path(tempfile.mkdtemp(prefix="hyperpool-bench-dag-"))
    write(work, layered(tasks // width, width, fan_in=2), [])
    return work / "workflow.json"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("trace", "rss"):
        print(json.dumps(_engine_footprint(Path(sys.argv[2]), trace=sys.argv[1] == "trace")))
    else:
        print(json.dumps({"pool_c1": pool_memory(1), "pool_c2": pool_memory(2)}))
