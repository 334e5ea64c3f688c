"""Development aid: run a workflow.json's processes in dependency order, one at a time.

This is not the engine. It exists so that a generated DAG can be proven correct (every input
is produced before it is consumed, every command succeeds, every declared output appears)
without RabbitMQ, Celery or hyperpool. It follows the same contract the engine does: each
command runs with the workflow directory as its working directory, argv as a list (no shell),
and ``stdout``/``stdoutAppend`` in the executor config redirect the command's standard output
to that (relative) file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


def order(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Processes in a topological order (Kahn), by signal names; raises on a cycle or orphan."""
    procs: list[dict[str, Any]] = doc["processes"]
    names = [s["name"] for s in doc["signals"]]
    initial = {s["name"] for s in doc["signals"] if "data" in s}

    def as_names(refs: list[int | str]) -> list[str]:  # signals by index or by name
        return [names[r] if isinstance(r, int) else r for r in refs]

    ins = [as_names(p["ins"]) for p in procs]
    outs = [as_names(p["outs"]) for p in procs]
    producer: dict[str, int] = {}
    for index, produced in enumerate(outs):
        for name in produced:
            if name in producer or name in initial:
                raise ValueError(f"signal {name} has more than one source")
            producer[name] = index
    waiting = [0] * len(procs)
    consumers: dict[int, list[int]] = defaultdict(list)
    for index, needed in enumerate(ins):
        for name in needed:
            if name in initial:
                continue
            if name not in producer:
                raise ValueError(f"{procs[index]['name']}: input {name} is never produced")
            waiting[index] += 1
            consumers[producer[name]].append(index)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    result = []
    while ready:
        index = ready.pop(0)
        result.append(procs[index] | {"ins": ins[index], "outs": outs[index]})
        for consumer in consumers[index]:
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                ready.append(consumer)
    if len(result) != len(procs):
        raise ValueError("the workflow has a cycle")
    return result


def run(workdir: Path) -> dict[str, float]:
    """Run every process; returns seconds spent per task type. Exits on the first failure."""
    doc = json.loads((workdir / "workflow.json").read_text())
    spent: dict[str, float] = defaultdict(float)
    for proc in order(doc):
        executor = proc["config"]["executor"]
        argv = [executor["executable"], *map(str, executor.get("args", []))]
        target = executor.get("stdout") or executor.get("stdoutAppend")
        mode = "a" if "stdoutAppend" in executor else "w"
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(workdir / target, mode)) if target \
                else subprocess.DEVNULL
            done = subprocess.run(argv, cwd=workdir, stdout=out, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, text=True)
        spent[proc["name"]] += time.perf_counter() - start
        missing = [o for o in proc["outs"] if not (workdir / o).exists()]
        if done.returncode != 0 or missing:
            sys.exit(f"run_sequential: {' '.join(argv)} failed (exit {done.returncode}, "
                     f"missing outputs {missing}): {done.stderr.strip()[-500:]}")
    return dict(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    workdir = parser.parse_args().workdir
    start = time.perf_counter()
    spent = run(workdir)
    print(f"run_sequential: done in {time.perf_counter() - start:.2f}s; "
          + ", ".join(f"{name} {seconds:.2f}s" for name, seconds in spent.items()))


if __name__ == "__main__":
    main()
