"""The reactive mode against this project's measured local runs (docs/bench-data/latest.json).

Each measured run is simulated with the parameters it had (pool bounds, budget, cooldown, task
lengths, the supervisor's tick) and the local chain's timing. Two numbers the simulation cannot
know are calibrated, each on one measurement, and every other row is a prediction:

* ``worker_start`` (spawn to consuming) = the median *0->1 first task started* of the scaling
  section minus the mean wait for the supervisor's next tick (half a tick) and the intake;
* ``job_latency`` (what a job-model task costs beyond its command: a fresh Python process,
  imports, the report) is fitted on the makespan row *legacy-montage-1.0-469, pools, 0.2 s*.

Measured, not fitted: ``intake`` (a worker process's per-message cost) = 1 / the no-op rate of
one worker with 2 slot threads, ``pool_latency`` = the one-task-in-flight round trip, both of
the same run; ``worker_stop`` = 0.3 s (a `threads` worker's warm shutdown, docs/benchmarks.md).
The demo's DAG is examples/montage/make_workflow.py's for each sky (its pooled types in pools,
the rest in the job model), every task taking the measured sequential run's time / tasks.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from bench.common import REPO, workflow_file
from bench.makespan import CONFIGS, ENV
from bench.simulate_chains import LocalChain, LocalRuntime
from bench.simulate_core import Simulation, StaticPools
from bench.simulate_model import Budget, PoolConf, SimDag, SimTask, from_dag, load_dag
from hyperpool.local.budget import DEFAULT_WORKER_CPU, DEFAULT_WORKER_MEMORY, MEMORY_SHARE

LATEST = REPO / "docs" / "bench-data" / "latest.json"
SCALING_TASK_SECONDS = 3.0  # bench/bench_scaling.py: round_trip(..., 3.0, ...)
SCALING_REQUEST = PoolConf(max_replicas=4, cpu=Decimal(1), memory=Decimal(2**28))
DEMO_COOLDOWN = 5.0  # examples/demo.py runs `hyperpool run --cooldown 5`
DEMO_MAX_JOBS = 4  # hyperpool run's --max-jobs default
CALIBRATION_ROW = ("legacy-montage-1.0-469", "pools", 0.2)
SEEDS = 40
COLD_SEEDS = 200  # a cold start is cheap; its tick phase needs many seeds


@dataclass(frozen=True)
class Calibration:
    worker_start: float
    job_latency: float
    intake: float
    pool_latency: float

    def chain(self, cooldown: float) -> LocalChain:
        return LocalChain(worker_start=self.worker_start, cooldown=cooldown)


@dataclass
class Check:
    section: str
    quantity: str
    measured: list[float]
    simulated: list[float]
    note: str = ""
    jobs: int = 0  # job-model tasks in the run (each costs one job latency)

    @property
    def error(self) -> float:
        """Simulated median vs measured median, in percent of the measured one."""
        meas = statistics.median(self.measured)
        return (statistics.median(self.simulated) - meas) / meas * 100


def load_results(path: Path = LATEST) -> dict[str, Any]:
    return json.loads(path.read_text())


def _ram_bytes(text: str) -> Decimal:
    value, unit = text.split()
    return Decimal(value) * {"GiB": 2**30, "MiB": 2**20}[unit]


def machine_budget(res: dict[str, Any]) -> Budget:
    """``local_budget()`` on the measured machine: its cores and 80 % of its memory."""
    m = res["machine"]
    return Budget(cpu=Decimal(m["cpus"]), memory=_ram_bytes(m["ram"]) * MEMORY_SHARE)


# -- scaling and containers: one pool from zero -----------------------------------------------
def cold_start(cal: Calibration, workers: int, cooldown: float, seed: int) -> dict[str, float]:
    tasks = [SimTask(i, "sleep", (), SCALING_TASK_SECONDS, "pool") for i in range(workers)]
    dag = SimDag("sleep", tasks)
    conf = replace(SCALING_REQUEST, max_replicas=workers)
    runtime = LocalRuntime(cal.chain(cooldown), Budget(cpu=Decimal(workers),
                                                       memory=Decimal(2**34)))
    sim = Simulation(dag, {"sleep": conf}, runtime, seed=seed, intake=cal.intake,
                     pool_latency=cal.pool_latency, record=True)
    result = sim.run(until=lambda: runtime.empty_at is not None)
    spawned = next(t for t, _, n in result.timeline if n >= workers)
    last = max(result.task_ends)
    assert runtime.empty_at is not None
    return {"first": min(result.task_starts), "spawned": spawned,
            "started": max(result.task_starts), "to_zero": runtime.empty_at - last}


def scaling_checks(res: dict[str, Any], cal: Calibration) -> list[Check]:
    out = []
    labels = {"first": "0->1: first task started", "spawned": "{n} workers spawned",
              "started": "0->{n}: {n} tasks started", "to_zero": "back to 0 after the last result"}
    runs = [("scaling", res["scaling_workers"], res["scaling_cooldown"], res["scaling"])]
    if "containers" in res:
        runs.append(("containers (processes)", 2, 1.0, res["containers"]["process"]))
    for section, workers, cooldown, measured in runs:
        sims = [cold_start(cal, workers, cooldown, seed) for seed in range(COLD_SEEDS)]
        for key, label in labels.items():
            note = "calibrates worker_start" if section == "scaling" and key == "first" else ""
            out.append(Check(section, label.format(n=workers), measured[key],
                             [s[key] for s in sims], note))
    return out


# -- the demo: real Montage through autoscaled local pools ------------------------------------
def demo_dag(cols: int, rows: int, per_task: float) -> SimDag:
    """examples/montage/make_workflow.py's DAG for the sky (grid overlaps: same pair count)."""
    examples = str(REPO / "examples" / "montage")
    if examples not in sys.path:
        sys.path.insert(0, examples)
    from make_workflow import POOLED, make_workflow

    with tempfile.TemporaryDirectory(prefix="hyperpool-sim-demo-") as tmp:
        out = Path(tmp)
        (out / "truth.json").write_text(json.dumps({"rows": rows, "cols": cols}))
        make_workflow(out, use_montage=False)
        dag = load_dag(str(out / "workflow.json"))
    types = {t.task_type for t in dag.tasks}
    return from_dag(dag, dict.fromkeys(types, per_task), jobs=types - set(POOLED),
                    name=f"demo {cols}x{rows}")


def demo_checks(res: dict[str, Any], cal: Calibration) -> list[Check]:
    out = []
    budget = machine_budget(res)
    conf = PoolConf(cpu=DEFAULT_WORKER_CPU, memory=Decimal(DEFAULT_WORKER_MEMORY))
    for row in res.get("demo", []):
        per_task = statistics.median(row["sequential"]) / row["tasks"]
        dag = demo_dag(row["cols"], row["rows"], per_task)
        pools = dict.fromkeys(dag.pool_types, conf)
        sims = []
        for seed in range(SEEDS):
            runtime = LocalRuntime(cal.chain(DEMO_COOLDOWN), budget)
            sim = Simulation(dag, pools, runtime, seed=seed, max_jobs=DEMO_MAX_JOBS,
                             job_latency=cal.job_latency, intake=cal.intake,
                             pool_latency=cal.pool_latency)
            sims.append(sim.run().makespan)
        out.append(Check("demo", f"{row['cols']}x{row['rows']} sky, {row['tasks']} tasks: "
                         "makespan", row["makespan"], sims,
                         f"{per_task * 1000:.0f} ms per task (sequential / tasks)"))
    return out


# -- the makespan section: warm, fixed pools ---------------------------------------------------
@cache
def static_dag(name: str, config: str, stub: float) -> SimDag:
    cfg = CONFIGS_BY_NAME[config]
    dag = load_dag(str(workflow_file(name)), env=ENV)
    return from_dag(dag, lambda _t: stub, jobs={t.task_type for t in dag.tasks} - set(
        cfg.pooled))


def static_makespan(name: str, config: str, stub: float, job_latency: float,
                    cal: Calibration) -> float:
    cfg = CONFIGS_BY_NAME[config]
    sim_dag = static_dag(name, config, stub)
    pools = {t: PoolConf(concurrency=-(-cfg.concurrency[t] // cfg.replicas.get(t, 1)))
             for t in cfg.pooled}
    runtime = StaticPools({t: cfg.replicas.get(t, 1) for t in cfg.pooled})
    sim = Simulation(sim_dag, pools, runtime, max_jobs=cfg.max_jobs, job_latency=job_latency,
                     intake=cal.intake, pool_latency=cal.pool_latency)
    return sim.run().makespan


CONFIGS_BY_NAME = {c.name: c for c in CONFIGS}


def fit_job_latency(res: dict[str, Any], cal: Calibration) -> float:
    """Bisection on the calibration row (the makespan grows with the job latency)."""
    name, config, stub = CALIBRATION_ROW
    row = next(r for r in res["makespan"]
               if (r["workflow"], r["config"], r["stub"]) == CALIBRATION_ROW)
    target = statistics.median(row["makespans"])
    lo, hi = 0.0, 5.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if static_makespan(name, config, stub, mid, cal) < target:
            lo = mid
        else:
            hi = mid
    return round((lo + hi) / 2, 3)


def makespan_checks(res: dict[str, Any], cal: Calibration) -> list[Check]:
    out = []
    for row in res.get("makespan", []):
        key = (row["workflow"], row["config"], row["stub"])
        simulated = static_makespan(*key, cal.job_latency, cal)
        note = "calibrates job_latency" if key == CALIBRATION_ROW else ""
        if row["config"] == "jobs":
            note = "16 job processes share 2 cores: not modelled"
        jobs = sum(t.model == "job" for t in static_dag(*key).tasks)
        out.append(Check("makespan (no autoscaling)", f"{row['workflow']}, {row['config']}, "
                         f"{row['stub']:g} s stub", row["makespans"], [simulated], note, jobs))
    return out


def calibrate(res: dict[str, Any]) -> Calibration:
    chain = LocalChain()
    first = statistics.median(res["scaling"]["first"])
    intake = 1 / statistics.median(res["noop"]["hyperpool_threads"])
    latency = statistics.median(res["latency"]["hyperpool"])
    cal = Calibration(round(first - chain.tick / 2 - intake, 3), 0.0, intake, latency)
    return replace(cal, job_latency=fit_job_latency(res, cal))


def validate(res: dict[str, Any] | None = None) -> tuple[Calibration, list[Check]]:
    res = load_results() if res is None else res
    cal = calibrate(res)
    return cal, scaling_checks(res, cal) + demo_checks(res, cal) + makespan_checks(res, cal)
