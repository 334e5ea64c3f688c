"""Generated HyperFlow workflows for the benchmarks: flat, chain and layered DAGs.

Real workflow files top out at 1,482 tasks; the throughput, latency and memory benchmarks need
a chosen shape and size (a flat fan-out of N independent tasks, a chain where each task waits
for the previous one, a 20,000-task layered DAG). They are written in the current HyperFlow
format (``processes``/``signals``) with one process per task and Montage-like executors
(an executable, a few file arguments, one output file), so the engine parses, expands and
dispatches them exactly as it does real files.

    python -m bench.gen OUT_DIR --layers 40 --width 500 [--pooled NAME ...]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from hyperpool.routing import EXECUTION_MODELS_FILE


def layered(layers: int, width: int, *, fan_in: int = 2, task_type: str = "task",
            executable: str = "true", seed: int = 1) -> dict[str, Any]:
    """``layers`` x ``width`` tasks; each task of layer l>0 reads ``fan_in`` outputs of l-1."""
    rng = random.Random(seed)
    processes: list[dict[str, Any]] = []
    signals: list[dict[str, Any]] = []
    previous: list[int] = []
    for layer in range(layers):
        current = []
        for i in range(width):
            out = len(signals)
            signals.append({"name": f"l{layer}_{i}.fits"})
            ins = sorted(rng.sample(previous, min(fan_in, len(previous)))) if previous else []
            processes.append({
                "name": task_type, "type": "dataflow", "function": "command",
                "config": {"executor": {
                    "executable": executable,
                    "args": [signals[s]["name"] for s in ins] + [signals[out]["name"]]}},
                "ins": ins, "outs": [out]})
            current.append(out)
        previous = current
    return {"name": f"layered-{layers}x{width}", "processes": processes, "signals": signals,
            "ins": [], "outs": previous}


def flat(count: int, **kwargs: Any) -> dict[str, Any]:
    """``count`` independent tasks: all ready at once (a throughput test)."""
    return layered(1, count, **kwargs)


def chain(count: int, **kwargs: Any) -> dict[str, Any]:
    """``count`` tasks each waiting for the previous one: one task in flight (a latency test)."""
    return layered(count, 1, fan_in=1, **kwargs)


def write(work_dir: Path, workflow: dict[str, Any], pooled: list[str]) -> Path:
    """Write ``workflow.json`` and the executionModels file pooling ``pooled`` task types."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "workflow.json").write_text(json.dumps(workflow))
    (work_dir / EXECUTION_MODELS_FILE).write_text(json.dumps([{"name": n} for n in pooled]))
    return work_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--fan-in", type=int, default=2)
    parser.add_argument("--pooled", nargs="*", default=[])
    args = parser.parse_args()
    write(args.out, layered(args.layers, args.width, fan_in=args.fan_in), args.pooled)
    print(f"{args.out}/workflow.json: {args.layers * args.width} tasks")


if __name__ == "__main__":
    main()
