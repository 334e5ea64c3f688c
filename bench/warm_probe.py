"""One task through ``hyperpool run``'s code path with local pools from zero; prints the
seconds from its publish to its start (a fresh process per sample, as a user's run is).

``--settled``: the supervisor runs for a second before the task is published, as for every
stage after a run's first (its template has finished importing); otherwise the task is
published as the pools start, as a run's first stage is.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import gen
from bench.common import bench_settings, delete_queues
from hyperpool.engine.dag import build_dag
from hyperpool.engine.loader import load_workflow
from hyperpool.engine.run import Engine, RunOptions
from hyperpool.executor import template
from hyperpool.executor.publisher import Publisher
from hyperpool.local.embedded import local_pools
from hyperpool.routing import load_routing
from hyperpool.services import redis_client


def main() -> None:
    template.warm_up()  # as `hyperpool run` does first thing
    namespace = os.environ["HYPERPOOL_NAMESPACE"]
    work = gen.write(Path(tempfile.mkdtemp(prefix="hyperpool-w01-")), gen.flat(1), ["task"])
    settings = bench_settings(namespace, work)
    try:
        dag = build_dag(load_workflow(work, env={}))
        routing = load_routing(work, namespace)
        publisher = Publisher(settings)
        engine = Engine(dag, routing, settings, RunOptions(work_dir=work), redis_client(settings),
                        publisher)
        with local_pools(settings, routing, work, cooldown=0) as supervisor:
            assert supervisor is not None
            engine.on_pool_work = supervisor.wake
            if "--settled" in sys.argv[1:]:
                time.sleep(1.0)
            outcome = engine.run()
        publisher.close()
        assert outcome.ok
        print(f"{outcome.state.results[0].started - engine.dispatched_at[0]:.4f}")
    finally:
        delete_queues(settings, namespace + ".")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
