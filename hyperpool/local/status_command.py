"""``hyperpool status``: what the pools of a namespace are doing, from any terminal.

It reads what live supervisors publish in Redis and, for queues nobody supervises, asks the
RabbitMQ management API. Each queue gets a state, so that the queues of earlier runs do not
drown the live ones: ``supervised`` (a running supervisor's pool), ``consumed`` (someone else's
consumers: docker-compose, Kubernetes), ``stranded`` (messages and nobody to read them) and
``idle`` (empty, unread: left from earlier runs; hidden unless ``--all``). The management API
does not know which broker the user meant, so the broker itself is asked first: queue depths
from another broker would be wrong, not merely stale.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
import redis
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hyperpool.errors import HyperpoolError, ServiceUnavailable
from hyperpool.executor.queues import DEAD_LETTER_SUFFIX
from hyperpool.local.cli import NAMESPACE, console
from hyperpool.local.management import ManagementApi
from hyperpool.local.state import read_states
from hyperpool.services import check_broker, redis_client
from hyperpool.settings import load_settings

SUPERVISED, CONSUMED, STRANDED, IDLE = "supervised", "consumed", "stranded", "idle"


def queue_state(ready: int, unacked: int, consumers: int) -> str:
    """The state of a queue no supervisor of ours serves (see the module docstring)."""
    if consumers:
        return CONSUMED
    return STRANDED if ready + unacked else IDLE


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
        check_broker(settings)
        queues = ManagementApi(settings).queues()
    except HyperpoolError as exc:
        if not states:
            raise
        queues = {}
        notes.append(f"{exc} (queue depths below are the supervisors' own)")
    rows: list[dict[str, Any]] = []
    served: set[str] = set()
    for state in states:
        for pool in state.get("pools", []):
            served.add(pool["queue"])
            dead = queues.get(pool["queue"] + DEAD_LETTER_SUFFIX)
            rows.append({**{k: v for k, v in pool.items() if k != "workers"},
                         "dead": dead.depth if dead else None, "supervisor": state["id"],
                         "state": SUPERVISED})
    for name, stats in sorted(queues.items()):
        if (not name.startswith(namespace + ".") or name.endswith(DEAD_LETTER_SUFFIX)
                or name in served):
            continue
        dead = queues.get(name + DEAD_LETTER_SUFFIX)
        rows.append({"name": None, "queue": name, "ready": stats.ready,
                     "unacked": stats.unacked, "consumers": stats.consumers,
                     "depth": stats.depth, "replicas": None, "draining": None,
                     "desired": None, "dead": dead.depth if dead else None,
                     "supervisor": None,
                     "state": queue_state(stats.ready, stats.unacked, stats.consumers)})
    supervisors = [{k: v for k, v in s.items() if k != "pools"} for s in states]
    return {"namespace": namespace, "supervisors": supervisors, "pools": rows, "notes": notes}


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def render_status(data: dict[str, Any], out: Console, *, show_idle: bool = False) -> None:
    for sup in data["supervisors"]:
        out.print(f"supervisor [bold]{sup['id']}[/] (namespace {sup['namespace']}): "
                  f"budget cpu {sup['budget']['cpu']}, memory {sup['budget']['memory']}; "
                  f"used cpu {sup['used']['cpu']}, memory {sup['used']['memory']}; "
                  f"cooldown {sup['cooldown']:g}s")
    if not data["supervisors"]:
        out.print("no pool supervisor running; queue depths from the RabbitMQ management API")
    rows = [r for r in data["pools"] if show_idle or r.get("state") != IDLE]
    hidden = len(data["pools"]) - len(rows)
    table = Table()
    table.add_column("POOL", overflow="fold")
    table.add_column("QUEUE", overflow="fold")
    table.add_column("STATE")
    for column in ("READY", "UNACKED", "CONSUMERS", "REPLICAS", "DESIRED", "REQUEST", "DEAD"):
        table.add_column(column, justify="right")
    for row in rows:
        replicas = _cell(row["replicas"])
        if row.get("draining"):
            replicas += f" (+{row['draining']} draining)"
        request = row.get("request")
        state = row.get("state", "")
        table.add_row(_cell(row["name"]), row["queue"],
                      f"[yellow]{state}[/]" if state == STRANDED else state,
                      _cell(row["ready"]), _cell(row["unacked"]), _cell(row["consumers"]),
                      replicas,
                      _cell(row["desired"]) + (" (quota)" if row.get("quota_limited") else ""),
                      f"{request['cpu']}/{request['memory']}" if request else "-",
                      _cell(row["dead"]))
    if rows:
        out.print(table)
    elif not hidden:
        out.print(f"no queues in namespace {data['namespace']!r}")
    if hidden:
        out.print(f"{hidden} idle queue{'s' if hidden != 1 else ''} (no messages, no "
                  "consumers: left from earlier runs) not shown; --all shows them")
    for row in rows:
        if row.get("restarts"):
            out.print(f"[yellow]pool {row['name']}:[/] {row['restarts']} worker exit"
                      f"{'s' if row['restarts'] != 1 else ''} on their own; last: "
                      f"{row.get('last_exit') or 'unknown'}")
    if any(r.get("state") == STRANDED for r in rows):
        out.print("[yellow]note:[/] stranded queues hold messages nobody reads: start their "
                  "pools (`hyperpool pools up --workdir DIR`) or delete the queues")
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


def watch_loop(show: Callable[[Console], None], out: Console, interval: float) -> None:
    """Refresh in place on a terminal; into a pipe or file, print each view in turn, stamped
    (a live display writes nothing a pipe can read)."""
    if not out.is_terminal:
        while True:
            out.print(f"--- {datetime.now().isoformat(timespec='seconds')}")
            show(out)
            out.file.flush()
            time.sleep(interval)
    from rich.live import Live

    with Live(console=out, auto_refresh=False) as live:
        while True:
            buffer = Console(record=True, width=out.width)
            show(buffer)
            live.update(Text.from_ansi(buffer.export_text(styles=True)), refresh=True)
            time.sleep(interval)


@click.command()
@NAMESPACE
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option("--all", "show_idle", is_flag=True,
              help="Also show idle queues (no messages, no consumers).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False),
              help="Show the WorkerPools of a cluster (conditions included) instead of local "
                   "pools.")
@click.option("--watch", "-w", "watch", type=click.FloatRange(0.5), default=None,
              metavar="SECONDS", help="Refresh every SECONDS until Ctrl-C.")
def status(namespace: str | None, as_json: bool, show_idle: bool, kubeconfig: str | None,
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

    def show(out: Console) -> None:
        data = collect()
        if "cluster" in data:
            render_cluster(namespace, data["cluster"], out)
        else:
            render_status(data, out, show_idle=show_idle)

    if as_json:
        click.echo(json.dumps(collect(), indent=2, sort_keys=True))
        return
    out = console()
    if watch is None:
        show(out)
    else:
        watch_loop(show, out, watch)
