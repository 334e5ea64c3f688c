"""``python -m bench [--quick] [--only SECTION ...]``: run every benchmark, write the report.

All sections run in one process, one after the other, and their numbers land in one document
(docs/benchmarks.md, plus PNG plots beside it), so comparisons are side by side on the same
machine in the same minutes. Each section is isolated: if one fails, the others still run
and the document says what was not measured and why. A full run takes about 17-20 minutes on
2 cores (the kubernetes section about 5 of them; ``HYPERPOOL_BENCH_KUBECONFIG`` gives it an
already running k8s/testcluster, since only one real node may run per dockerd);
``--quick`` (smaller sizes, one repeat, no 469-task job-model run, no cluster) takes about 3.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import REPO, fsync_latency, machine, wait_quiet, workflow_file

# Where the local RabbitMQ keeps its Raft logs (Debian's package); else any local disk.
BROKER_DISK = next(p for p in (Path("/var/lib/rabbitmq"), Path(tempfile.gettempdir()))
                   if os.access(p, os.W_OK))
SECTIONS = ("throughput", "latency", "makespan", "scaling", "memory", "controller", "demo",
            "containers", "kubernetes", "warm")


def run_section(name: str, quick: bool, res: dict[str, Any]) -> None:
    repeats = 1 if quick else 5
    if name == "throughput":
        from bench import throughput as tp

        res["noop_tasks"] = 500 if quick else 2000
        res["noop"] = dataclasses.asdict(tp.noop_throughput(tasks=res["noop_tasks"],
                                                            repeats=repeats))
        res["command_tasks"] = 300 if quick else 1000
        res["command"] = dataclasses.asdict(tp.command_throughput(tasks=res["command_tasks"],
                                                                  repeats=1 if quick else 3))
        res["publishers"] = tp.publisher_variants(tasks=res["noop_tasks"],
                                                  repeats=1 if quick else 3)
        res["publish_only"] = tp.publish_rates(messages=res["noop_tasks"])
    elif name == "latency":
        from bench import throughput as tp

        res["latency"] = dataclasses.asdict(tp.latency(samples=100 if quick else 300))
    elif name == "makespan":
        from bench import makespan

        res["makespan"] = makespan.measure(makespan.default_plan(quick))
        res["makespan_configs"] = {c.name: dataclasses.asdict(c)
                                   for c in makespan.CONFIGS}
    elif name == "scaling":
        from bench import bench_scaling

        res["scaling_workers"] = 4
        res["scaling_cooldown"] = 1.0
        res["scaling"] = bench_scaling.measure(4, 2 if quick else 3, cooldown=1.0)
    elif name == "memory":
        from bench import memory

        res["pool_memory"] = {f"c{c}": memory.pool_memory(c) for c in (1, 2)}
        res["celery_memory"] = memory.celery_memory(1)
        workflows = {"legacy-montage-2.0-1482": workflow_file("legacy-montage-2.0-1482"),
                     "generated 20,000 tasks": memory.generated_dag(20_000)}
        res["engine_memory"] = {k: memory.engine_memory(v) for k, v in workflows.items()}
        shutil.rmtree(workflows["generated 20,000 tasks"].parent, ignore_errors=True)
    elif name == "controller":
        from bench import controller

        res["controller"] = controller.measure(pools=200)
    elif name == "demo":
        from bench import demo

        res["demo"] = demo.measure(1 if quick else 3)
    elif name == "containers":
        from bench import containers

        res["containers"] = containers.measure(1 if quick else 3)
    elif name == "warm":
        from bench import warm

        res["warm"] = warm.measure(1 if quick else 3, quick=quick)
    elif name == "kubernetes":
        from bench import kubernetes

        res["kubernetes"] = kubernetes.measure(1 if quick else 3)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller, single-repeat run")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[],
                        help="leave these sections out")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: re-render the document from a --json file")
    parser.add_argument("--merge", type=Path, metavar="JSON",
                        help="measure the --only sections and put them into the raw numbers of "
                             "an earlier run (rewritten in place), then render the document")
    args = parser.parse_args()
    if args.render:
        render_saved(args.render, args.out)
        return
    if args.merge:
        merge_sections(args.merge, args.only or [], args.quick, args.out)
        return
    sections = [s for s in (args.only or SECTIONS) if s not in args.skip]
    for needs_cluster in ("controller", "kubernetes"):
        if args.quick and not args.only and needs_cluster in sections:
            sections.remove(needs_cluster)
    res: dict[str, Any] = {"machine": machine(), "quick": args.quick, "errors": {},
                           "started": time.strftime("%Y-%m-%d %H:%M %Z"),
                           "load_before": os.getloadavg(), "sections": sections,
                           "fsync_before": fsync_latency(BROKER_DISK)}
    began = time.monotonic()
    for name in sections:
        print(f"bench: {name} ...", flush=True)
        wait_quiet()
        t0 = time.monotonic()
        try:
            run_section(name, args.quick, res)
        except Exception as exc:  # noqa: BLE001 - report it, go on with the next section
            traceback.print_exc()
            res["errors"][name] = f"{type(exc).__name__}: {exc}".strip()[:600]
        print(f"bench: {name} took {time.monotonic() - t0:.0f}s", flush=True)
    res["load_after"] = os.getloadavg()
    res["fsync_after"] = fsync_latency(BROKER_DISK)
    res["duration_s"] = time.monotonic() - began
    from bench import report

    report.write(res, args.out)
    if args.json:
        args.json.write_text(json.dumps(res, default=_plain, indent=1))
    print(f"bench: wrote {args.out} ({res['duration_s'] / 60:.1f} min)")


def merge_sections(saved: Path, sections: list[str], quick: bool, out: Path) -> None:
    """Measure ``sections`` again, alone, into an earlier run's numbers; the document says
    which sections were re-run, when, and on what load."""
    res = json.loads(saved.read_text())
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load = os.getloadavg()[0]
    for name in sections:
        print(f"bench: {name} ...", flush=True)
        wait_quiet()
        res["errors"].pop(name, None)
        try:
            run_section(name, quick, res)
        except Exception as exc:  # noqa: BLE001 - report it like a full run would
            traceback.print_exc()
            res["errors"][name] = f"{type(exc).__name__}: {exc}".strip()[:600]
        if name not in res["sections"]:
            res["sections"].append(name)
    note = (f"The {', '.join(sections)} section{'s were' if len(sections) > 1 else ' was'} "
            f"measured alone after the full run ({started}; load average {load:.2f} before, "
            f"{os.getloadavg()[0]:.2f} after).")
    res["rerun"] = " ".join([*_kept_notes(res.get("rerun") or "", sections), note])
    saved.write_text(json.dumps(res, default=_plain, indent=1))
    render_saved(saved, out)


NOTE = re.compile(r"The (?P<names>[\w, ]+?) sections? (?:\(new\) )?(?:was|were) measured alone")


def _kept_notes(rerun: str, sections: list[str]) -> list[str]:
    """Earlier re-run notes, less those of sections measured again now (superseded)."""
    kept = []
    for sentence in filter(None, re.split(r"(?<=\)\.) ", rerun)):
        match = NOTE.match(sentence)
        if match and set(match["names"].split(", ")) <= set(sections):
            continue
        kept.append(sentence)
    return kept


def render_saved(saved: Path, out: Path) -> None:
    """Rebuild the document (and plots) from the raw numbers of an earlier run."""
    from bench import report
    from bench.makespan import Row

    res = json.loads(saved.read_text())
    if "makespan" in res:
        res["makespan"] = [Row(**row) for row in res["makespan"]]
    report.write(res, out)
    print(f"bench: rendered {out} from {saved}")


def _plain(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else str(obj)


if __name__ == "__main__":
    main()
