"""The text of docs/benchmarks.md, rendered from one run's results.

Only the prose that explains *what* is measured and *how* is fixed here; every number,
ratio and met/not-met verdict comes from the run, so the document cannot drift from it.
"""

from __future__ import annotations

from typing import Any

from bench.common import median, percentile


def _f(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _runs(values: list[float], digits: int = 0) -> str:
    return ", ".join(_f(v, digits) for v in values)


def _ok(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def _baseline(r: dict[str, Any]) -> list[float]:
    """The goals' baseline: raw Celery with the same safety settings (older runs: plain)."""
    return r.get("celery_safe") or r["celery"]


def _ratio(res: dict[str, Any], key: str, side: str = "safe", ours: str = "hyperpool"
           ) -> float | None:
    if key not in res or not res[key].get(ours):
        return None
    base = _baseline(res[key]) if side == "safe" else res[key]["celery"]
    return median(res[key][ours]) / median(base)


def _threads_note(res: dict[str, Any], key: str) -> str:
    """The one-process shape's ratio, for runs that measured it."""
    ratio = _ratio(res, key, ours="hyperpool_threads")
    return "" if ratio is None else f"; 1 worker x 2 slot threads {ratio:.2f}x"


def goals(res: dict[str, Any]) -> tuple[list[str], dict[int, bool | None]]:
    rows, met = [], {}
    for n, key, target in ((1, "noop", 3.0), (2, "command", 2.5)):
        ratio = _ratio(res, key)
        met[n] = None if ratio is None else ratio >= target
        what = "no-op" if key == "noop" else "`true` command"
        measured = "—" if ratio is None else (
            f"{_f(median(res[key]['hyperpool']))} vs {_f(median(_baseline(res[key])))} tasks/s "
            f"= **{ratio:.2f}x** (vs Celery's defaults {_ratio(res, key, 'plain'):.2f}x"
            f"{_threads_note(res, key)})")
        rows.append(f"| {n} | throughput, {what}, vs raw Celery, same safety settings | "
                    f">= {target}x | {measured} | {_ok(met[n])} |")
    if "latency" in res:
        lat = res["latency"]["hyperpool"]
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        met[3] = p50 <= 0.003 and p99 <= 0.010
        cel = _baseline(res["latency"])
        measured = (f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms (raw Celery, same safety "
                    f"settings: p50 {percentile(cel, 50) * 1e3:.2f}, p99 "
                    f"{percentile(cel, 99) * 1e3:.2f} ms)")
    else:
        met[3], measured = None, "—"
    rows.append(f"| 3 | idle latency, publish -> engine notified | p50 <= 3 ms, p99 <= 10 ms | "
                f"{measured} | {_ok(met[3])} |")
    judged = "pools-wide" if any(r.config == "pools-wide" for r in res.get("makespan", [])) \
        else "pools"
    pooled = [r for r in res.get("makespan", []) if r.config == judged and r.stub > 0]
    if pooled:
        ratios = [median(r.makespans) / r.ideal for r in pooled]
        met[4] = all(x <= 1.2 for x in ratios)
        measured = ", ".join(f"{r.workflow} {x:.2f}" for r, x in zip(pooled, ratios, strict=True))
    else:
        met[4], measured = None, "—"
    rows.append(f"| 4 | makespan / ideal, {judged}, 0.2 s stubs | <= 1.2 | {measured} | "
                f"{_ok(met[4])} |")
    if "scaling" in res:
        sc = res["scaling"]
        first, started, zero = median(sc["first"]), median(sc["started"]), median(sc["to_zero"])
        met[5] = first <= 1.5 and started <= 3.0 and len(sc["to_zero"]) == len(sc["first"])
        measured = (f"0->1 {first:.2f} s, 0->{res['scaling_workers']} {started:.2f} s, back to 0 "
                    f"{zero:.2f} s after the last result (cooldown {res['scaling_cooldown']:g} s)")
        lagging = zero > res["scaling_cooldown"] + 1.5
    else:
        met[5], measured, lagging = None, "—", False
    verdict = "**partly met** (to 0 reached, but late)" if met[5] and lagging else _ok(met[5])
    rows.append(f"| 5 | local scaling reaction | 0->1 <= 1.5 s, 0->N <= 3 s, to 0 after "
                f"cooldown | {measured} | {verdict} |")
    ctl = res.get("controller") or {}
    if ctl.get("ready") is not None:
        met[6] = (ctl["ready"] == ctl["pools"] and ctl["all_ready_s"] <= 20.0
                  and ctl["steady_writes"] == 0)
        measured = (f"{ctl['ready']}/{ctl['pools']} Ready in {ctl['all_ready_s']:.1f} s, "
                    f"{ctl['steady_writes']} writes in {ctl['steady_window_s']:.0f} s steady state")
    else:
        met[6], measured = None, ctl.get("skipped") or res["errors"].get("controller", "—")
    rows.append(f"| 6 | controller, 200 WorkerPools, real API server | all Ready <= 20 s, 0 "
                f"writes when idle | {measured} | "
                f"{_ok(met[6])} |")
    if "pool_memory" in res:
        c1 = res["pool_memory"]["c1"]
        met[7] = c1["rss"] <= 80
        measured = f"pool {c1['rss']:.0f} MiB RSS (PSS {c1['pss']:.0f} MiB), -c 1"
        if ctl.get("controller_rss_mib") is not None:
            met[7] = met[7] and ctl["controller_rss_mib"] <= 150
            measured += (f"; controller {ctl['controller_rss_mib']:.0f} MiB with "
                         f"{ctl['pools']} pools")
    else:
        met[7], measured = None, "—"
    rows.append(f"| 7 | memory: idle pool process (with any children), controller | <= 80 MB, "
                f"<= 150 MB RSS | {measured} | {_ok(met[7])} |")
    return rows, met


def throughput_section(res: dict[str, Any]) -> list[str]:
    out = ["## 1-2. Throughput", "",
           f"Flat workflow of {res['noop_tasks']:,} independent tasks (no-op) and "
           f"{res.get('command_tasks', 0):,} (`true`), two task-running processes on each "
           "side, runs interleaved. hyperpool: an in-process `Engine` (what `hyperpool run` "
           "uses) publishing to two `hyperpool worker -c 1` processes (a pool with two "
           "replicas: the baseline's shape, and the goals' measurement) and, separately, to "
           "one `hyperpool worker -c 2` (two slot threads in one process); results through "
           "the run's completion stream; tasks/s = tasks / engine makespan. Raw Celery: "
           "`apply_async` all, then `AsyncResult.get()` each (Redis result backend, "
           "`acks_late`, prefetch 1, `celery worker -c 2 -P prefork`), twice: **same safety** "
           "adds what hyperpool guarantees (publisher confirms, a durable quorum queue with a "
           "delivery limit) and is the goals' baseline; **defaults** is Celery as usually run "
           "(classic queue, no confirms), for reference.", "",
           "| task | hyperpool 2 x 1 slot, tasks/s, median (runs) | hyperpool 1 x 2 slot "
           "threads | raw Celery, same safety | ratio 2 x 1 (1 x 2) | raw Celery, defaults | "
           "ratio 2 x 1 |",
           "|---|---|---|---|---|---|---|"]
    for key, what in (("noop", "no-op (`--stub-sleep 0`)"), ("command", "`true` (subprocess)")):
        if key in res:
            r = res[key]
            safe, threads = _baseline(r), r.get("hyperpool_threads") or []
            threads_cell = f"{_f(median(threads))} ({_runs(threads)})" if threads else "—"
            threads_ratio = _ratio(res, key, ours="hyperpool_threads")
            threads_ratio_cell = "" if threads_ratio is None else f" ({threads_ratio:.2f}x)"
            out.append(f"| {what} | {_f(median(r['hyperpool']))} ({_runs(r['hyperpool'])}) | "
                       f"{threads_cell} | {_f(median(safe))} ({_runs(safe)}) | "
                       f"{_ratio(res, key):.2f}x{threads_ratio_cell} | "
                       f"{_f(median(r['celery']))} ({_runs(r['celery'])}) | "
                       f"{_ratio(res, key, 'plain'):.2f}x |")
    sides = ("hyperpool", "hyperpool_threads", "celery_safe", "celery")
    names = ("hyperpool 2 x 1", "hyperpool 1 x 2", "Celery (safe)", "Celery (defaults)")
    out += ["", "CPU milliseconds per task spent by each participant (last run of each side; "
            "worker: all worker processes of the side together). On this 2-core machine the "
            "sum bounds throughput.", "",
            "| participant | " + " | ".join(f"{task}: {name}" for task in ("no-op", "`true`")
                                           for name in names) + " |",
            "|---|" + "---|" * (2 * len(sides))]
    parts = ("engine/client", "worker", "rabbitmq", "redis")
    cpu = {k: res[k]["cpu"] for k in ("noop", "command") if k in res}
    for part in (*parts, "total"):
        cells = []
        for key in ("noop", "command"):
            for side in sides:
                row = cpu.get(key, {}).get(side, {})
                value = sum(row.values()) if part == "total" else row.get(part)
                cells.append("—" if value is None else f"{value:.2f}")
        out.append(f"| {part} | " + " | ".join(cells) + " |")
    if "publishers" in res:
        only = res.get("publish_only", {})
        out += ["", "Effect of the publisher change: end to end (same no-op workflow and worker, "
                "runs interleaved), and the engine's publishing capacity alone "
                f"({res['noop_tasks']:,} messages into a queue nobody consumes, confirmed):", "",
                "| engine publishes with | end to end, tasks/s, median (runs) | publishing "
                "alone, messages/s |", "|---|---|---|"]
        for name, values in res["publishers"].items():
            alone = _f(only[name]) if name in only else "—"
            out.append(f"| {name} | {_f(median(values))} ({_runs(values)}) | {alone} |")
    out += ["", "![throughput](bench-throughput.png)", ""]
    return out


def latency_section(res: dict[str, Any]) -> list[str]:
    out = ["## 3. Idle latency", "",
           f"{len(res['latency']['hyperpool'])} sequential tasks each (a 1-wide chain for "
           "hyperpool: the engine dispatches the next task only after processing the previous "
           "result, so one task is in flight; no-op stub, `hyperpool worker -c 1`). hyperpool: "
           "the engine's clock from the start of a task's dispatch (message built, published, "
           "confirmed) to the engine processing its result from the stream. Raw Celery: "
           "`apply_async` + `get()` round trip, `-c 1`, same safety settings and defaults.", "",
           "| | p50 | p90 | p99 | mean |", "|---|---|---|---|---|"]
    for side in ("hyperpool", "celery_safe", "celery"):
        v = res["latency"].get(side)
        if not v:
            continue
        out.append(f"| {side} | {percentile(v, 50) * 1e3:.2f} ms | {percentile(v, 90) * 1e3:.2f} "
                   f"ms | {percentile(v, 99) * 1e3:.2f} ms | {sum(v) / len(v) * 1e3:.2f} ms |")
    out += ["", "![latency](bench-latency.png)", ""]
    return out


def makespan_section(res: dict[str, Any]) -> list[str]:
    cfg = res["makespan_configs"]
    pools, jobs = cfg["pools"], cfg["jobs"]
    wide = cfg.get("pools-wide", {}).get("concurrency", {})
    split = cfg.get("pools-wide", {}).get("replicas", {})
    slots = lambda c: ", ".join(f"{t} {n}" for t, n in c.items())  # noqa: E731
    replicas = "; ".join(f"{t} as {n} worker processes" for t, n in split.items())
    out = ["## 4. Makespan of Montage workflows", "",
           "`hyperpool run --no-local-pools --stub-sleep S` (the CLI, makespan from its "
           "`--json-summary`). **pools**: mProjectPP, mDiffFit, mBackground each in a warm "
           f"`hyperpool worker` ({slots(pools['concurrency'])} slots), the other types in the "
           f"job model (`--max-jobs {pools['max_jobs']}`); **pools-wide**: every type in a "
           f"warm pool with as many slots as its widest stage ({slots(wide)}"
           f"{'; ' + replicas + ', one per core' if replicas else ''}) — what autoscaled "
           "pools reach on a cluster; here a slot is a thread and a stub a sleep — "
           "so the ideal is the critical path and the ratio is hyperpool's own overhead; "
           f"**jobs**: everything in the job model (`--max-jobs {jobs['max_jobs']}`). "
           "**ideal** = "
           "max(critical path, work of each slot class / its slots) — for the all-jobs rows "
           "exactly max(critical path, total work / workers). **schedule** = a zero-overhead "
           "greedy simulation of the same DAG on the same slots (Montage's barriers — "
           "mConcatFit waits for every mDiffFit — make the ideal bound unreachable; this "
           "separates the DAG's shape from hyperpool's overhead). With 0 s stubs there is no "
           "ideal; the overhead per task is makespan / tasks.", "",
           "| workflow | tasks | model | stub | makespan, median (runs) | ideal | schedule | "
           "/ ideal | / schedule | per task |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["makespan"]:
        m = median(r.makespans)
        ideal = f"{m / r.ideal:.2f}" if r.ideal else "—"
        sched = f"{m / r.simulated:.2f}" if r.simulated else "—"
        out.append(f"| {r.workflow} | {r.tasks} | {r.config} | {r.stub:g} s | {m:.2f} s "
                   f"({_runs(r.makespans, 2)}) | {r.ideal:.2f} s | {r.simulated:.2f} s | {ideal} "
                   f"| {sched} | {m / r.tasks * 1e3:.1f} ms |")
    out += ["", "![makespan](bench-makespan.png)", ""]
    return out


def scaling_section(res: dict[str, Any]) -> list[str]:
    sc, n = res["scaling"], res["scaling_workers"]
    out = ["## 5. Local scaling reaction", "",
           f"`bench/bench_scaling.py`: a supervised pool at 0 replicas (max {n}, cooldown "
           f"{res['scaling_cooldown']:g} s, tick 0.25 s) gets {n} tasks of 3 s at once; times "
           "from the first publish. *back to 0*: from the round's last result until the pool "
           "has no worker processes again.", "", "| | median | runs |", "|---|---|---|"]
    for key, label in (("first", "0->1: first task started"),
                       ("spawned", f"{n} workers spawned"),
                       ("started", f"0->{n}: {n} tasks started"),
                       ("to_zero", "back to 0 after the last result")):
        out.append(f"| {label} | {median(sc[key]):.2f} s | {_runs(sc[key], 2)} |")
    return [*out, ""]


def memory_section(res: dict[str, Any]) -> list[str]:
    out = ["## 7. Memory", ""]
    if "pool_memory" in res:
        out += ["Idle pool process (3 s after it started consuming). RSS counts pages shared "
                "between the main process and its forked children once per process; PSS "
                "splits them.", "",
                "| worker | processes | RSS sum | PSS sum | USS sum | main RSS |",
                "|---|---|---|---|---|---|"]
        rows = [(f"hyperpool worker -c {k[1:]}", v) for k, v in res["pool_memory"].items()]
        if "celery_memory" in res:
            rows.append(("raw Celery worker -c 1 (reference)", res["celery_memory"]))
        for label, v in rows:
            out.append(f"| {label} | {v['processes']} | {v['rss']:.1f} MiB | {v['pss']:.1f} MiB "
                       f"| {v['uss']:.1f} MiB | {v['main_rss']:.1f} MiB |")
    if "engine_memory" in res:
        out += ["", "Engine: workflow loaded, DAG expanded, `Engine` built (*loaded*), then every "
                "task completed through `Engine._on_result` with results kept (*finished*). "
                "Python heap from tracemalloc; RSS growth from a separate run without it.", "",
                "| workflow | tasks | heap loaded | heap finished | per task (heap) | "
                "RSS growth | per task (RSS) | engine RSS |", "|---|---|---|---|---|---|---|---|"]
        for name, v in res["engine_memory"].items():
            out.append(f"| {name} | {v['tasks']:,} | {v['loaded_mib']:.1f} MiB | "
                       f"{v['finished_mib']:.1f} MiB | {v['finished_bytes_per_task']:,.0f} B | "
                       f"{v['rss_finished_mib']:.1f} MiB | {v['rss_bytes_per_task']:,.0f} B | "
                       f"{v['rss_total_mib']:.0f} MiB |")
    return [*out, ""]


def controller_section(res: dict[str, Any]) -> list[str]:
    ctl = res.get("controller") or {}
    out = ["## 6. Controller at scale", ""]
    if ctl.get("ready") is None:
        reason = ctl.get("skipped") or res["errors"].get("controller") or "not run"
        return [*out, f"Not measured: {reason}", ""]
    out += [f"`hyperpool controller -A` (subprocess) against k8s/testcluster (kube-apiserver "
            f"{ctl.get('server_version', '?')}); {ctl['pools']} WorkerPools created at once in "
            f"one namespace, repair interval {ctl['steady_window_s'] / 2 - 1:g} s."
            + (f" Note: {ctl['note']}." if ctl.get("note") else ""), "", "| | value |",
            "|---|---|"]
    for key, label in (("create_s", "creating the WorkerPools (client side)"),
                       ("children_s", "until all children exist"),
                       ("all_ready_s", "until all are Ready (observedGeneration current)"),
                       ("ready_p50_s", "per pool, create -> Ready, p50"),
                       ("ready_p99_s", "per pool, create -> Ready, p99"),
                       ("controller_cpu_s", "controller CPU seconds, whole run"),
                       ("controller_rss_mib", "controller RSS, MiB"),
                       ("steady_writes", "objects written in steady state by anyone but "
                        "kube-controller-manager (of "
                        f"{ctl.get('steady_objects', '?')})"),
                       ("steady_writes_by_kind", "... by kind"),
                       ("steady_cluster_writes", "... changed by kube-controller-manager only "
                        "(Deployment status; not counted)"),
                       ("steady_window_s", "steady-state window, s")):
        if key in ctl:
            value = ctl[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
            out.append(f"| {label} | {value:.2f} |" if isinstance(value, float)
                       else f"| {label} | {value} |")
    return [*out, ""]


def _fsync(res: dict[str, Any]) -> str:
    before, after = res.get("fsync_before"), res.get("fsync_after")
    if not before or not after:
        return ""
    return (" fdatasync of 4 KiB on the broker's disk, 5 s before / after the run: p50 "
            f"{before['p50']:.2f} / {after['p50']:.2f} ms, p99 {before['p99']:.1f} / "
            f"{after['p99']:.1f} ms, max {before['max']:.0f} / {after['max']:.0f} ms (a quorum "
            "queue delivers and confirms a message only once it is synced).")


def render(res: dict[str, Any], plots: list[str]) -> str:
    m = res["machine"]
    rows, met = goals(res)
    out = ["# Benchmarks", "",
           f"Generated by `python -m bench{' --quick' if res['quick'] else ''}` "
           f"({res['started']}, {res['duration_s'] / 60:.1f} min). Do not edit by hand: re-run "
           "it. Benchmarks are not tests; nothing here is asserted in `tests/`."
           + (f" {res['rerun']}" if res.get("rerun") else ""), "",
           f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['ram']} RAM, {m['os']}; Python "
           f"{m['python']}, Celery {m['celery']}, kombu {m['kombu']}, redis-py {m['redis-py']}, "
           f"pydantic {m['pydantic']}, RabbitMQ {m.get('rabbitmq', '?')}, Redis "
           f"{m.get('redis-server', '?')}. Load average before/after: "
           f"{res['load_before'][0]:.2f} / {res['load_after'][0]:.2f} (the machine is shared, so "
           "runs are interleaved and medians reported)." + _fsync(res), "",
           "## Goals", "", "| # | goal | target | measured | |", "|---|---|---|---|---|", *rows,
           ""]
    if res["errors"]:
        out += ["Sections that failed in this run:", ""]
        out += [f"- {k}: `{v}`" for k, v in res["errors"].items()]
        out.append("")
    if "noop" in res:
        out += throughput_section(res)
    if "latency" in res:
        out += latency_section(res)
    if "makespan" in res:
        out += makespan_section(res)
    if "scaling" in res:
        out += scaling_section(res)
    if "controller" in res["sections"]:
        out += controller_section(res)
    if "pool_memory" in res or "engine_memory" in res:
        out += memory_section(res)
    if "demo" in res:
        from bench.demo import section as demo_section

        out += demo_section(res)
    if "containers" in res:
        from bench.containers import section as containers_section

        out += containers_section(res)
    if "warm" in res:
        from bench.warm import section as warm_section

        out += warm_section(res)
    if "kubernetes" in res:
        from bench.kubernetes_report import section as kubernetes_section

        out += kubernetes_section(res)
    from bench.notes import notes

    out += notes(res, met)
    return "\n".join(out) + "\n"
