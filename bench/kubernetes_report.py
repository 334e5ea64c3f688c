"""The "Kubernetes (real node)" section of docs/benchmarks.md, from bench/kubernetes.py's
raw numbers."""

from __future__ import annotations

from typing import Any

from bench.common import median
from bench.kubernetes import GENERIC_IMAGE, MONTAGE_IMAGE, POOLED


def _runs(values: list[float], digits: int = 1) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def _cell(values: list[float], digits: int = 1) -> str:
    return f"{median(values):.{digits}f} s ({_runs(values, digits)})" if values else "—"


def _job_means(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per job-model task type, the summary's mean_seconds of every run."""
    out: dict[str, list[float]] = {}
    for run in runs:
        for name, v in run["per_task_type"].items():
            if v["model"] == "job" and v["mean_seconds"] is not None:
                out.setdefault(name, []).append(v["mean_seconds"])
    return out


def _per_task(runs: list[dict[str, Any]]) -> tuple[float, float]:
    """(median over runs of the mean launch lifetime, of the mean command time) per job task."""
    lives = [sum(r["lifetimes"]) / len(r["lifetimes"]) for r in runs if r["lifetimes"]]
    commands = []
    for r in runs:
        jobs = [v for v in r["per_task_type"].values() if v["model"] == "job"]
        count = sum(v["count"] for v in jobs)
        commands.append(sum(v["count"] * (v["mean_seconds"] or 0) for v in jobs) / count)
    return median(lives), median(commands)


def section(res: dict[str, Any]) -> list[str]:
    k = res["kubernetes"]
    node, ps, m = k["node"], k["pod_start"], k["montage"]
    out = ["## Kubernetes (real node)", "",
           f"`bench/kubernetes.py` on {k['cluster']}: kube-apiserver {k['server_version']}, "
           f"node `{node['name']}` (kubelet {node['kubelet']}, {node['runtime']}, this "
           f"machine's {res['machine']['cpus']} CPUs, which it shares with the control plane "
           "and the benchmark). Load average at the section's start / end: "
           f"{k['load_start'][0]:.2f} / {k['load_end'][0]:.2f} "
           f"({k['duration_s'] / 60:.1f} min). Rounds interleaved, {k['rounds']} of each; "
           "medians.", "",
           f"Pod start: a Deployment of `{GENERIC_IMAGE}` running `sleep 3600`, restricted "
           "security context and no service account token as the controller's pods, created "
           "through the API (what `kubectl "
           "apply` sends), until its pods are Ready (pods polled every 0.1 s; image present, "
           "`IfNotPresent`); then deleted, until its pods are gone (grace period 1 s). One "
           "warm-up round first.", "",
           "| | 1 replica, median (runs) | 10 replicas, median (runs) |", "|---|---|---|",
           f"| create -> first pod Ready | {_cell(ps['1']['first'], 2)} | "
           f"{_cell(ps['10']['first'], 2)} |",
           f"| create -> all pods Ready | {_cell(ps['1']['all'], 2)} | "
           f"{_cell(ps['10']['all'], 2)} |",
           f"| delete -> every pod marked for deletion (garbage collector) | "
           f"{_cell(ps['1']['marked'], 2)} | {_cell(ps['10']['marked'], 2)} |",
           f"| delete -> pods gone | {_cell(ps['1']['gone'], 2)} | "
           f"{_cell(ps['10']['gone'], 2)} |", ""]
    cols, rows, size = k["sky"]
    kube, local = m["kubernetes"], m["local"]
    km, lm = [r["makespan"] for r in kube], [r["makespan"] for r in local]
    k_life, k_cmd = _per_task(kube)
    l_life, l_cmd = _per_task(local)
    job_count = sum(v["count"] for v in kube[0]["per_task_type"].values() if v["model"] == "job")
    out += [f"Montage: examples/montage, {cols}x{rows} sky of {size} px tiles (seed 7), "
            f"{m['tasks']} tasks, {job_count} of them in the job model. **Kubernetes**: "
            f"`hyperpool run --no-local-pools --job-model kubernetes` (engine on this machine); "
            f"{', '.join(POOLED)} in three WorkerPools of `{MONTAGE_IMAGE}` kept at one Ready "
            "pod each (KEDA cannot run here, so they are pre-warmed; created -> all three "
            f"Ready took {m['pools_ready_s']:.1f} s, controller included), the rest one "
            "batch/v1 Job per task on the real node (hostPath work dir, 250m CPU / 256Mi "
            "each); broker and Redis in containers on the node's address. **Local**: "
            "`hyperpool run` as examples/demo.py runs it: local pools from zero, one "
            "`hyperpool execute` process per job-model task, this machine's RabbitMQ and "
            "Redis. Load: the 1-minute load average when each run started.", "",
            "| | Kubernetes, median (runs) | local, median (runs) | Kubernetes / local |",
            "|---|---|---|---|",
            f"| makespan | {_cell(km)} | {_cell(lm)} | {median(km) / median(lm):.2f}x |",
            f"| job-model task, launch -> gone (mean per run) | {k_life:.2f} s | "
            f"{l_life:.2f} s | {k_life / l_life:.2f}x |",
            f"| ... of which the command (summary `mean_seconds`) | {k_cmd:.2f} s | "
            f"{l_cmd:.2f} s | |",
            f"| job-model overhead per task | {k_life - k_cmd:.2f} s | {l_life - l_cmd:.2f} s | "
            f"{(k_life - k_cmd) / (l_life - l_cmd):.1f}x |",
            f"| load at start | {_runs([r['load'] for r in kube], 2)} | "
            f"{_runs([r['load'] for r in local], 2)} | |", "",
            "Job-model task types, the run summary's `mean_seconds` (the executor's time around "
            "the command, in the pod or the local process; launch costs are not in it). A "
            "Job's container has a 250m CPU limit, a CFS quota of a quarter core, against a "
            "local process's whole machine:", "",
            "| task type | tasks | Kubernetes Job, median (runs) | local process, median (runs) "
            "|", "|---|---|---|---|"]
    kmeans, lmeans = _job_means(kube), _job_means(local)
    counts = {n: v["count"] for n, v in kube[0]["per_task_type"].items()}
    for name in kmeans:
        out.append(f"| {name} | {counts[name]} | {_cell(kmeans[name], 2)} | "
                   f"{_cell(lmeans.get(name, []), 2)} |")
    if m.get("jobs_left"):
        out += ["", f"Jobs left behind after the runs: {m['jobs_left']}."]
    return [*out, ""]

