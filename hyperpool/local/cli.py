"""``hyperpool pools up | validate`` (``hyperpool status`` is in :mod:`.status_command`).

``pools up`` is the local stand-in for the operator: it reads the WorkerPool manifests a user
would ``kubectl apply`` and keeps autoscaled worker processes for them in the foreground until
Ctrl-C/SIGTERM, which drains (running tasks finish; a second Ctrl-C kills).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from hyperpool.demand import UpcomingReader
from hyperpool.errors import ConfigError
from hyperpool.local.budget import Resources, local_budget, worker_request
from hyperpool.local.manifests import (
    PoolConfig,
    check_fit,
    default_pool,
    pools_from_manifests,
)
from hyperpool.local.metrics import PoolMetrics, share_with_workers
from hyperpool.local.state import StatePublisher
from hyperpool.local.supervisor import (
    DEFAULT_COOLDOWN,
    DEFAULT_INTERVAL,
    Supervisor,
    SupervisorOptions,
)
from hyperpool.routing import load_routing
from hyperpool.scaling import quota_max_replicas
from hyperpool.services import check_redis
from hyperpool.settings import load_settings

FILES = click.option(
    "-f", "--filename", "files", multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="WorkerPool manifest file (YAML, one or many documents); repeatable.")
WORKDIR = click.option(
    "--workdir", type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Workflow work dir: the workers' cwd; task types in its executionModels file "
         "without a manifest get a default pool.")
NAMESPACE = click.option("--namespace", help="Queue namespace (default: $HYPERPOOL_NAMESPACE "
                                             "or 'default').")
BUDGET = [
    click.option("--budget-cpu", metavar="QUANTITY",
                 help="Cores for all pools, e.g. 2 or 1500m (default: this machine's usable "
                      "cores)."),
    click.option("--budget-memory", metavar="QUANTITY",
                 help="Memory for all pools, e.g. 8Gi (default: 80% of this machine's)."),
    click.option("--worker-cpu", metavar="QUANTITY",
                 help="CPU request of a worker whose pool states none [default: 500m]."),
    click.option("--worker-memory", metavar="QUANTITY",
                 help="Memory request of a worker whose pool states none [default: 256Mi]."),
]


RUNTIME = click.option(
    "--runtime", type=click.Choice(["process", "docker"]), default="process", show_default=True,
    help="Run each worker as a local process, or as a container of its pool's spec.image "
         "(limits from initialResources.limits).")
WORKER_IMAGE = click.option(
    "--worker-image", default="hyperpool/executor-generic:latest", show_default=True,
    help="With --runtime docker: the image of pools whose manifest names none.")


def container_runtime(runtime: str, worker_image: str, pools: Sequence[PoolConfig]) -> Any:
    """None for processes; else the Docker runtime, its daemon and every pool's image checked
    before any worker starts."""
    if runtime != "docker":
        return None
    from hyperpool.local.containers import ContainerRuntime

    containers = ContainerRuntime(worker_image)
    containers.check(list(pools))
    return containers


def budget_options(func):  # type: ignore[no-untyped-def]
    for option in reversed(BUDGET):
        func = option(func)
    return func


def resolve_pools(files: Sequence[Path], workdir: Path | None, namespace: str,
                  default_request: Resources) -> list[PoolConfig]:
    """Manifest pools, plus default pools for routed task types that have no manifest."""
    pools = pools_from_manifests(list(files), namespace, default_request)
    if workdir is not None:
        covered = {p.task_type for p in pools} | {p.queue for p in pools}
        routing = load_routing(workdir, namespace)
        for task_type, queue in sorted(routing.queues.items()):
            if task_type not in covered and queue not in covered:
                pools.append(default_pool(task_type, queue, default_request))
    if not pools:
        raise ConfigError("no pools to run: pass -f pools.yaml and/or --workdir DIR holding "
                          "workflow.config.executionModels.json")
    return pools


def console(*, stderr: bool = False) -> Console:
    """A rich console that does not squeeze tables into 80 columns when piped or logged."""
    con = Console(stderr=stderr)
    return con if con.is_terminal else Console(stderr=stderr, width=160)


def pools_table(pools: Sequence[PoolConfig], budget: Resources) -> Table:
    table = Table(title=f"local pools (budget {budget.describe()})")
    for column in ("POOL", "TASK TYPE", "QUEUE", "MIN", "MAX", "REQUEST", "FIT", "SOURCE"):
        table.add_column(column, overflow="fold")
    for p in pools:
        fit = quota_max_replicas(p.max_replicas, p.request.as_mapping(), budget.as_mapping())
        table.add_row(p.name, p.task_type, p.queue, str(p.min_replicas), str(p.max_replicas),
                      p.request.short(), str(fit), p.source)
    return table


@click.group()
def pools() -> None:
    """Run WorkerPools locally: autoscaled `hyperpool worker` processes per pool."""


@pools.command()
@FILES
@WORKDIR
@NAMESPACE
@budget_options
def validate(files: tuple[Path, ...], workdir: Path | None, namespace: str | None,
             budget_cpu: str | None, budget_memory: str | None, worker_cpu: str | None,
             worker_memory: str | None) -> None:
    """Check manifests and show the pools `pools up` would run, with how many fit."""
    settings = load_settings()
    budget = local_budget(budget_cpu, budget_memory)
    found = resolve_pools(files, workdir, namespace or settings.namespace,
                          worker_request(worker_cpu, worker_memory))
    console().print(pools_table(found, budget))
    # The rule and message of `pools up` and `run --pools`: what they refuse, this refuses.
    for warning in check_fit(found, budget):
        click.echo(f"hyperpool pools: warning: {warning}", err=True)


@pools.command()
@FILES
@WORKDIR
@NAMESPACE
@budget_options
@click.option("--cooldown", type=click.FloatRange(0), default=DEFAULT_COOLDOWN,
              show_default=True, help="Seconds a pool's demand must stay lower before it "
                                      "scales down (to zero: queue empty that long).")
@click.option("--interval", type=click.FloatRange(0.05), default=DEFAULT_INTERVAL,
              show_default=True, help="Seconds between scaling decisions.")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write each worker's log to a file here (default: this terminal).")
@click.option("--worker-loglevel", default="INFO", show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535),
              help="Serve Prometheus metrics of the pools on this port "
                   "(default: $HYPERPOOL_METRICS_PORT, else none).")
@RUNTIME
@WORKER_IMAGE
def up(files: tuple[Path, ...], workdir: Path | None, namespace: str | None,
       budget_cpu: str | None, budget_memory: str | None, worker_cpu: str | None,
       worker_memory: str | None, cooldown: float, interval: float, log_dir: Path | None,
       worker_loglevel: str, metrics_port: int | None, runtime: str,
       worker_image: str) -> None:
    """Run the pools in the foreground; Ctrl-C or SIGTERM drains them (again: kill)."""
    settings = load_settings()
    if namespace:
        settings = dataclasses.replace(settings, namespace=namespace)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s hyperpool pools: %(message)s")
    budget = local_budget(budget_cpu, budget_memory)
    found = resolve_pools(files, workdir, settings.namespace,
                          worker_request(worker_cpu, worker_memory))
    work_dir = (workdir or Path(settings.work_dir)).resolve()
    options = SupervisorOptions(budget=budget, work_dir=work_dir, cooldown=cooldown,
                                interval=interval, log_dir=log_dir,
                                worker_loglevel=worker_loglevel,
                                runtime=container_runtime(runtime, worker_image, found))
    supervisor = Supervisor(settings, found, options)  # checks every pool fits the budget
    client = check_redis(settings)
    supervisor.listeners.append(StatePublisher(client))
    supervisor.upcoming = UpcomingReader(client, [p.queue for p in found])
    port = metrics_port or settings.metrics_port
    if port:
        share_with_workers()  # before prometheus-client is imported, see local/metrics.py
        metrics = PoolMetrics()
        try:
            metrics.serve(port)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on port {port}: {exc.strerror}",
                              source="--metrics-port") from None
        supervisor.listeners.append(metrics)
    console(stderr=True).print(pools_table(found, budget))
    signals = 0

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            click.echo("hyperpool pools: draining; running tasks finish first "
                       "(Ctrl-C again to kill them)", err=True)
            supervisor.stop(wait=False)
        else:
            supervisor.force()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        supervisor.start()
        while not supervisor.join(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("hyperpool pools: stopped", err=True)
    if signals > 1:
        sys.exit(130)
