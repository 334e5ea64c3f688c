"""``hyperpool pools up | validate`` and ``hyperpool status``.

``pools up`` is the local stand-in for the operator: it reads the WorkerPool manifests a user
would ``kubectl apply`` and keeps autoscaled worker processes for them in the foreground until
Ctrl-C/SIGTERM, which drains (running tasks finish; a second Ctrl-C kills). ``status`` reads
what live supervisors publish in Redis and, for queues nobody supervises, asks the RabbitMQ
management API, so it works from any terminal or container.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import redis
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hyperpool.errors import ConfigError, HyperpoolError, ServiceUnavailable
from hyperpool.executor.queues import DEAD_LETTER_SUFFIX
from hyperpool.local.budget import Resources, local_budget, worker_request
from hyperpool.local.management import ManagementApi
from hyperpool.local.manifests import (
    PoolConfig,
    check_fit,
    default_pool,
    pools_from_manifests,
)
from hyperpool.local.metrics import PoolMetrics, share_with_workers
from hyperpool.local.state import StatePublisher, read_states
from hyperpool.local.supervisor import (
    DEFAULT_COOLDOWN,
    DEFAULT_INTERVAL,
    Supervisor,
    SupervisorOptions,
)
from hyperpool.routing import load_routing
from hyperpool.scaling import quota_max_replicas
from hyperpool.services import check_redis, redis_client
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
def up(files: tuple[Path, ...], workdir: Path | None, namespace: str | None,
       budget_cpu: str | None, budget_memory: str | None, worker_cpu: str | None,
       worker_memory: str | None, cooldown: float, interval: float, log_dir: Path | None,
       worker_loglevel: str, metrics_port: int | None) -> None:
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
                                worker_loglevel=worker_loglevel)
    supervisor = Supervisor(settings, found, options)  # checks every pool fits the budget
    supervisor.listeners.append(StatePublisher(check_redis(settings)))
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


# -- status -------------------------------------------------------------------------------
def gather_status(namespace: str) -> dict[str, Any]:
    """Supervisor snapshots from Redis plus the namespace's queues from the management API."""
    settings = load_settings()
    notes: list[str] = []
    try:
        states = read_states(redis_client(settings))
    except (redis.RedisError, OSError) as exc:
        states = []
        notes.append(f"Redis unreachable, supervisors unknown: {exc}")
    try:
        queues = ManagementApi(settings).queues()
    except HyperpoolError as exc:
        if not states:
            raise
        queues = {}
        notes.append(str(exc))
    rows: list[dict[str, Any]] = []
    served: set[str] = set()
    for state in states:
        for pool in state.get("pools", []):
            served.add(pool["queue"])
            dead = queues.get(pool["queue"] + DEAD_LETTER_SUFFIX)
            rows.append({**{k: v for k, v in pool.items() if k != "workers"},
                         "dead": dead.depth if dead else None, "supervisor": state["id"]})
    for name, stats in sorted(queues.items()):
        if (not name.startswith(namespace + ".") or name.endswith(DEAD_LETTER_SUFFIX)
                or name in served):
            continue
        dead = queues.get(name + DEAD_LETTER_SUFFIX)
        rows.append({"name": None, "queue": name, "ready": stats.ready,
                     "unacked": stats.unacked, "consumers": stats.consumers,
                     "depth": stats.depth, "replicas": None, "draining": None,
                     "desired": None, "dead": dead.depth if dead else None,
                     "supervisor": None})
    supervisors = [{k: v for k, v in s.items() if k != "pools"} for s in states]
    return {"namespace": namespace, "supervisors": supervisors, "pools": rows, "notes": notes}


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def render_status(data: dict[str, Any], out: Console) -> None:
    for sup in data["supervisors"]:
        out.print(f"supervisor [bold]{sup['id']}[/] (namespace {sup['namespace']}): "
                      f"budget cpu {sup['budget']['cpu']}, memory {sup['budget']['memory']}; "
                      f"used cpu {sup['used']['cpu']}, memory {sup['used']['memory']}; "
                      f"cooldown {sup['cooldown']:g}s")
    if not data["supervisors"]:
        out.print("no pool supervisor running; queue depths from the RabbitMQ "
                      "management API")
    table = Table()
    table.add_column("POOL", overflow="fold")
    table.add_column("QUEUE", overflow="fold")
    for column in ("READY", "UNACKED", "CONSUMERS", "REPLICAS", "DESIRED", "REQUEST", "DEAD"):
        table.add_column(column, justify="right")
    for row in data["pools"]:
        replicas = _cell(row["replicas"])
        if row.get("draining"):
            replicas += f" (+{row['draining']} draining)"
        request = row.get("request")
        table.add_row(_cell(row["name"]), row["queue"], _cell(row["ready"]),
                      _cell(row["unacked"]), _cell(row["consumers"]), replicas,
                      _cell(row["desired"]) + (" (quota)" if row.get("quota_limited") else ""),
                      f"{request['cpu']}/{request['memory']}" if request else "-",
                      _cell(row["dead"]))
    if data["pools"]:
        out.print(table)
    else:
        out.print(f"no queues in namespace {data['namespace']!r}")
    for note in data["notes"]:
        out.print(f"[yellow]note:[/] {note}")


def render_cluster(namespace: str, rows: list[dict[str, Any]], out: Console) -> None:
    table = Table(title=f"WorkerPools in namespace {namespace}")
    for column in ("POOL", "TASK TYPE", "QUEUE", "MIN", "MAX", "REPLICAS", "READY", "REASON"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], _cell(row["task_type"]), _cell(row["queue"]),
                      _cell(row["min"]),
                      _cell(row["max_by_quota"] if row["max_by_quota"] is not None
                            else row["max"]),
                      f"{_cell(row['ready_replicas'])}/{_cell(row['replicas'])}",
                      _cell(row["ready"]), _cell(row["reason"]))
    out.print(table if rows else f"no WorkerPools in namespace {namespace!r}")
    for row in rows:
        if row["ready"] != "True" and row["message"]:
            out.print(f"[yellow]{row['name']}:[/] {row['message']}")


@click.command()
@NAMESPACE
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False),
              help="Show the WorkerPools of a cluster (conditions included) instead of local "
                   "pools.")
@click.option("--watch", "-w", "watch", type=click.FloatRange(0.5), default=None,
              metavar="SECONDS", help="Refresh every SECONDS until Ctrl-C.")
def status(namespace: str | None, as_json: bool, kubeconfig: str | None,
           watch: float | None) -> None:
    """Show each pool's queue depth, consumers, replicas and desired replicas."""
    namespace = namespace or load_settings().namespace

    def collect() -> dict[str, Any]:
        if kubeconfig:
            from hyperpool.controller.status_view import cluster_pools

            return {"namespace": namespace, "cluster": cluster_pools(namespace, kubeconfig)}
        try:
            return gather_status(namespace)
        except ServiceUnavailable as exc:
            raise ServiceUnavailable(f"{exc} (and no pool supervisor state in Redis)") from None

    def show(data: dict[str, Any], out: Console) -> None:
        if "cluster" in data:
            render_cluster(namespace, data["cluster"], out)
        else:
            render_status(data, out)

    if as_json:
        click.echo(json.dumps(collect(), indent=2, sort_keys=True))
        return
    out = console()
    if watch is None:
        show(collect(), out)
        return
    from rich.live import Live

    with Live(console=out, auto_refresh=False) as live:
        while True:
            buffer = Console(record=True, width=out.width)
            show(collect(), buffer)
            live.update(Text.from_ansi(buffer.export_text(styles=True)), refresh=True)
            time.sleep(watch)
