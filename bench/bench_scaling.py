"""Scale-from-zero latency of the local pool supervisor, on the real broker.

    .venv/bin/python bench/bench_scaling.py [--workers N] [--rounds R]

For a pool at zero replicas it measures, from the moment the first message is published:

* ``first start``: when the first task's command started (the executor's ``started`` stamp);
* ``N spawned``: when the supervisor had started N worker processes;
* ``N started``: when N tasks (each sleeping long enough to need its own worker) had started.

Each round waits for the pool to return to zero first (cooldown 1 s), so every round is a true
cold start; how long that took after the round's last result is reported as ``back to zero``.
``python -m bench`` calls :func:`measure`. Needs RabbitMQ (with the management plugin) and
Redis, as ``make services`` sets up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hyperpool.executor.publisher import Publisher  # noqa: E402
from hyperpool.executor.results import ResultReader, run_stream  # noqa: E402
from hyperpool.local.budget import Resources  # noqa: E402
from hyperpool.local.management import ManagementApi  # noqa: E402
from hyperpool.local.manifests import PoolConfig  # noqa: E402
from hyperpool.local.supervisor import Supervisor, SupervisorOptions  # noqa: E402
from hyperpool.models import TaskMessage  # noqa: E402
from hyperpool.services import check_redis  # noqa: E402
from hyperpool.settings import load_settings  # noqa: E402


def wait(predicate, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.time()
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


def round_trip(sup: Supervisor, publisher: Publisher, reader: ResultReader, queue: str,
               workers: int, sleep: float, tag: str) -> tuple[float, float, float]:
    pool = sup.pools[0]
    wait(lambda: not pool.workers, 30, "scale to zero")
    ids = [f"{tag}-{i}" for i in range(workers)]
    t0 = time.time()
    for task_id in ids:
        publisher.publish(queue, TaskMessage(executable="sleep", args=[str(sleep)],
                                             taskId=task_id), reply_to=reader.stream)
    spawned = wait(lambda: len(pool.active) >= workers, 30, f"{workers} workers") - t0
    results = {}
    while len(results) < workers:
        for result in reader.read(block_ms=500):
            results[result.task_id] = result
    starts = sorted(r.started for r in results.values())
    assert all(r.exit_code == 0 for r in results.values())
    return starts[0] - t0, spawned, starts[-1] - t0


def measure(workers: int = 4, rounds: int = 3, interval: float = 0.25,
            cooldown: float = 1.0, runtime: object = None) -> dict[str, list[float]]:
    """Run ``rounds`` cold starts; per round: first start, N spawned, N started, back to 0.

    ``to zero`` is the time from the round's last result to the pool having no workers
    again (the cooldown plus the supervisor's reaction and the workers' warm shutdown).
    ``runtime``: None for worker processes, else e.g. a ContainerRuntime.
    """
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    settings = load_settings({**os.environ, "HYPERPOOL_NAMESPACE": namespace})
    queue = f"{namespace}.sleep"
    pool = PoolConfig(name="sleep", task_type="sleep", queue=queue, min_replicas=0,
                      max_replicas=workers, request=Resources(Decimal(1), Decimal(2**28)),
                      source="bench")
    client = check_redis(settings)
    stream = run_stream(f"bench-{uuid.uuid4().hex}")
    work_dir = Path(tempfile.mkdtemp(prefix="hyperpool-bench-"))
    options = SupervisorOptions(budget=Resources(Decimal(workers), Decimal(2**34)),
                                work_dir=work_dir, cooldown=cooldown, interval=interval,
                                log_dir=work_dir / "logs", runtime=runtime)
    sup = Supervisor(settings, [pool], options).start()
    publisher = Publisher(settings)
    reader = ResultReader(client, stream)
    out: dict[str, list[float]] = {"first": [], "spawned": [], "started": [], "to_zero": []}
    try:
        for n in range(rounds):
            # Long enough that every task needs its own worker.
            first, spawned, all_started = round_trip(sup, publisher, reader, queue, workers,
                                                     3.0, f"r{n}")
            done = time.time()
            out["to_zero"].append(wait(lambda: not sup.pools[0].workers, 60, "scale to zero")
                                  - done)
            for key, value in zip(("first", "spawned", "started"), (first, spawned, all_started),
                                  strict=True):
                out[key].append(value)
            print(f"round {n + 1}: first task started {first:.2f}s, {workers} workers "
                  f"spawned {spawned:.2f}s, {workers} tasks started {all_started:.2f}s, "
                  f"back to zero {out['to_zero'][-1]:.2f}s after the last result", flush=True)
    finally:
        sup.stop()
        publisher.close()
        client.delete(stream)
        api = ManagementApi(settings)
        api.delete_queue(queue)
        api.delete_queue(queue + ".dead")
        shutil.rmtree(work_dir, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args()
    out = measure(args.workers, args.rounds, args.interval)
    labels = {"first": "first task started", "spawned": f"{args.workers} workers spawned",
              "started": f"{args.workers} tasks started", "to_zero": "back to zero"}
    for key, label in labels.items():
        values = out[key]
        print(f"median {label}: {statistics.median(values):.2f}s "
              f"(min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    main()
