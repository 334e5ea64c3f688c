"""``hyperpool`` command line: run | worker | execute | pools | controller | status.

User errors (:class:`~hyperpool.errors.HyperpoolError`) print one line and exit non-zero;
only bugs keep their traceback.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click

from hyperpool.errors import ConfigError, HyperpoolError
from hyperpool.settings import load_settings


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it runs.

    ``hyperpool execute`` is started once per job-model task, so it must not pay for importing
    the engine, Celery or the Kubernetes client (about 0.25 s per task).
    """

    lazy: dict[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hyperpool")
def cli() -> None:
    """Worker pools for HyperFlow workflows on RabbitMQ, Celery and Kubernetes."""


@cli.command()
@click.option("--queue", "-Q", help="Queue to consume (default: $HYPERPOOL_QUEUE / $QUEUE_NAME).")
@click.option("--concurrency", "-c", default=1, show_default=True, type=click.IntRange(1, 512),
              help="Tasks run at once by this process.")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve Prometheus /metrics here (default: $HYPERPOOL_METRICS_PORT, off).")
def worker(queue: str | None, concurrency: int, loglevel: str, metrics_port: int | None
           ) -> None:
    """Run one executor-pool process on QUEUE (SIGTERM: finish the running task, then exit)."""
    from hyperpool.executor.worker import run_worker

    settings = load_settings()
    queue = queue or settings.queue_name
    if not queue:
        raise ConfigError("no queue given: pass --queue or set HYPERPOOL_QUEUE (or QUEUE_NAME)")
    run_worker(settings, queue, concurrency=concurrency, loglevel=loglevel,
               metrics_port=metrics_port if metrics_port is not None else settings.metrics_port)


@cli.command()
@click.option("--message", "message_file", type=click.Path(allow_dash=True),
              help="File holding the task message JSON ('-' for stdin).")
@click.option("--message-json", help="The task message JSON itself.")
@click.option("--reply-to", help="Completion stream to report the result to.")
@click.option("--attempt", default=1, show_default=True, type=click.IntRange(1))
@click.option("--run-id", help="Workflow run the task belongs to (skip if cancelled or done).")
@click.option("--model", default="job", show_default=True, hidden=True)
def execute(message_file: str | None, message_json: str | None, reply_to: str | None,
            attempt: int, run_id: str | None, model: str) -> None:
    """Run one task message in this process (the job model) and exit with its exit code."""
    from hyperpool.executor.job import execute_once

    if message_json is None:
        if message_file is None:
            raise ConfigError("pass --message FILE or --message-json JSON")
        source = "<stdin>" if message_file == "-" else message_file
        try:
            message_json = (sys.stdin.read() if message_file == "-"
                            else Path(message_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc}", source=source) from None
    code = execute_once(load_settings(), message_json, reply_to=reply_to, attempt=attempt,
                        model=model, run_id=run_id)
    sys.exit(code)


def _register_optional_commands() -> None:
    """Commands whose modules pull in heavy dependencies are imported lazily."""
    LazyGroup.lazy["run"] = "hyperpool.engine.command:run"
    LazyGroup.lazy.update(pools="hyperpool.local.cli:pools",
                          status="hyperpool.local.status_command:status")
    LazyGroup.lazy["controller"] = "hyperpool.controller.command:controller"


def main(argv: list[str] | None = None) -> None:
    _register_optional_commands()
    try:
        cli.main(args=argv, prog_name="hyperpool", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("hyperpool: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except HyperpoolError as exc:
        click.secho(f"hyperpool: error: {exc}", err=True, fg="red")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def dump_json(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
