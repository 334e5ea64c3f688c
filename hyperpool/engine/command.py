"""``hyperpool run WORKDIR``: the command users run."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from hyperpool.engine.dag import build_dag
from hyperpool.engine.loader import load_workflow
from hyperpool.engine.outputs import check_output_file
from hyperpool.engine.report import Progress, failure_report, summary, write_summary
from hyperpool.engine.run import Engine, RunOptions
from hyperpool.engine.run_record import last_run
from hyperpool.errors import ConfigError, ServiceUnavailable, WorkflowFailed
from hyperpool.executor import template
from hyperpool.executor.publisher import Publisher
from hyperpool.local.cli import RUNTIME, WORKER_IMAGE, container_runtime
from hyperpool.quantities import parse_quantity
from hyperpool.routing import Routing, load_routing, unmatched_entries
from hyperpool.services import check_broker, check_redis
from hyperpool.settings import Settings, load_settings, mask_url
from hyperpool.wording import plural


@click.command()
@click.argument("workdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--namespace", help="Queue namespace (default: $HYPERPOOL_NAMESPACE or 'default').")
@click.option("--max-jobs", default=4, show_default=True, type=click.IntRange(1),
              help="Job-model tasks run at once.")
@click.option("--keep-going", is_flag=True, help="Run everything not depending on a failure.")
@click.option("--attempts", default=1, show_default=True, type=click.IntRange(1),
              help="Attempts per task before it counts as failed.")
@click.option("--backoff", default=1.0, show_default=True, type=click.FloatRange(0),
              help="Seconds before the first retry; doubles for each further one.")
@click.option("--stub-sleep", type=click.FloatRange(0), metavar="SECONDS",
              help="Replace every executable by a stub sleeping SECONDS (for tests/benchmarks).")
@click.option("--resume", is_flag=True,
              help="Continue the last run in WORKDIR: finished tasks are not run again.")
@click.option("--local-pools/--no-local-pools", default=True, show_default=True,
              help="Run autoscaled local pools for the pooled task types (off when pools run "
                   "elsewhere: `hyperpool pools up`, docker-compose, Kubernetes).")
@click.option("--pools", "pool_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="WorkerPool manifests sizing the local pools (repeatable).")
@click.option("--budget-cpu", help="Cores local pools may use (default: this machine's).")
@click.option("--budget-memory", help="Memory local pools may use, e.g. 8Gi (default: 80% of "
                                      "this machine's).")
@click.option("--cooldown", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Seconds a local pool's queue must stay empty before it scales to zero.")
@RUNTIME
@WORKER_IMAGE
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve the engine's Prometheus /metrics on this port.")
@click.option("--job-model", type=click.Choice(["local", "docker", "kubernetes"]),
              default="local", show_default=True,
              help="Where unlisted task types run: one local `hyperpool execute` process per "
                   "task, one container of --job-image per task, or one batch/v1 Job per task.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False),
              help="With --job-model kubernetes (default: in-cluster, then $KUBECONFIG).")
@click.option("--job-image", default="hyperpool/executor-generic:latest", show_default=True,
              help="Executor image of the job model's Jobs (kubernetes) or containers (docker).")
@click.option("--job-namespace", help="Namespace of the Jobs (default: --namespace).")
@click.option("--job-volume-claim", metavar="NAME",
              help="With --job-model kubernetes: a PersistentVolumeClaim in the Jobs' namespace "
                   "holding WORKDIR, mounted read-write at WORKDIR's absolute path (the path "
                   "task messages name; ReadWriteMany unless all Jobs share one node). Without "
                   "it or --job-host-path the Jobs get no volume and tasks cannot see WORKDIR's "
                   "files.")
@click.option("--job-host-path", is_flag=True,
              help="With --job-model kubernetes, on single-node/dev clusters: mount the node's "
                   "directory at WORKDIR's absolute path (hostPath, type Directory; the "
                   "namespace's Pod Security level must allow hostPath). Excludes "
                   "--job-volume-claim.")
@click.option("--job-redis-url", metavar="URL",
              help="With --job-model kubernetes: the Redis URL the Jobs' pods report results to "
                   "(default: the engine's own; pods usually reach Redis under another "
                   "address, a Service name or the node's).")
@click.option("--job-resources", metavar="cpu=Q,memory=Q",
              help="With --job-model kubernetes: requests and limits (equal) of each Job's "
                   "container, e.g. cpu=500m,memory=512Mi; a namespace whose ResourceQuota "
                   "bounds cpu or memory admits no pod without them.")
@click.option("--timeline", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw a Gantt chart of tasks per worker to this .png or .html file.")
@click.option("--json-summary", type=click.Path(dir_okay=False, path_type=Path),
              help="Write {tasks_total, succeeded, failed, makespan_seconds, ...} here.")
def run(workdir: Path, namespace: str | None, max_jobs: int, keep_going: bool, attempts: int,
        backoff: float, stub_sleep: float | None, resume: bool, local_pools: bool,
        pool_files: tuple[Path, ...], budget_cpu: str | None, budget_memory: str | None,
        cooldown: float, runtime: str, worker_image: str, metrics_port: int | None,
        job_model: str, kubeconfig: str | None,
        job_image: str, job_namespace: str | None, job_volume_claim: str | None,
        job_host_path: bool, job_redis_url: str | None, job_resources: str | None,
        timeline: Path | None,
        json_summary: Path | None) -> None:
    """Run the HyperFlow workflow in WORKDIR (workflow.json + optional executionModels)."""
    check_job_options(job_model, volume_claim=job_volume_claim, host_path=job_host_path,
                      redis_url=job_redis_url, resources=job_resources)
    if not workdir.is_dir():
        raise ConfigError("no such directory", source=str(workdir))
    if job_model == "local" or (local_pools and runtime == "process"):
        # The fork template's imports (~0.5 s) overlap loading the workflow and connecting,
        # instead of delaying the first worker or job.
        template.warm_up()
    settings = load_settings()
    namespace = namespace or settings.namespace
    workdir = workdir.resolve()
    # Written when the run ends: check them now, so a typo does not cost the whole run.
    if json_summary:
        check_output_file(json_summary, what="JSON summary")
    if timeline:
        from hyperpool.engine.timeline import check_timeline_path

        check_timeline_path(timeline)
    dag = build_dag(load_workflow(workdir))
    routing = load_routing(workdir, namespace)
    for warning in unmatched_entries(routing, (t.task_type for t in dag.tasks)):
        click.echo(f"hyperpool: warning: {warning}", err=True)
    client = check_redis(settings)
    if metrics_port is not None or settings.metrics_port is not None:
        from hyperpool import metrics

        metrics.serve(metrics_port if metrics_port is not None else settings.metrics_port)
    publisher = None
    if routing.queues:
        check_broker(settings)
        publisher = Publisher(settings)
    options = RunOptions(work_dir=workdir, max_jobs=max_jobs, keep_going=keep_going,
                         attempts=attempts, backoff=backoff, stub_sleep=stub_sleep,
                         run_id=last_run(workdir, dag) if resume else None)
    progress = Progress()
    launcher = None
    if job_model == "kubernetes":
        launcher = kubernetes_jobs(settings, kubeconfig, job_image, job_namespace or namespace,
                                   work_dir=workdir, volume_claim=job_volume_claim,
                                   host_path=job_host_path, redis_url=job_redis_url,
                                   resources=parse_job_resources(job_resources))
    elif job_model == "docker":
        from hyperpool.engine.container_jobs import ContainerJobLauncher

        launcher = lambda engine: ContainerJobLauncher(  # noqa: E731 - the factory's shape
            settings, engine.client, engine.stream, workdir, engine.run_id, job_image)
    engine = Engine(dag, routing, settings, options, client, publisher, on_progress=progress,
                    job_launcher=launcher)
    click.echo(f"hyperpool: run {engine.run_id}: {plural(len(dag.tasks), 'task')} "
               f"({sum(routing.model(t.task_type) == 'pool' for t in dag.tasks)} in pools, "
               f"the rest in the job model)", err=True)
    if resume:
        done, adopted = engine.resume()
        click.echo(f"hyperpool: resuming: {plural(done, 'task')} already done, "
                   f"{plural(adopted, 'running job')} adopted", err=True)
    pools: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if local_pools and routing.queues:
        from hyperpool.local.embedded import local_pools as embedded_pools

        pools = embedded_pools(settings, routing, workdir, list(pool_files),
                               budget_cpu=budget_cpu, budget_memory=budget_memory,
                               cooldown=cooldown,
                               runtime=lambda found: container_runtime(runtime, worker_image,
                                                                       found))
    try:
        with pools as supervisor:
            if supervisor is not None:
                engine.on_pool_work = supervisor.wake
            outcome = engine.run()
            if outcome.interrupted and supervisor is not None:
                # Ctrl-C: the run is cancelled; don't wait without bound for running tasks.
                supervisor.stop(drain_timeout=10)
    finally:
        if job_model == "kubernetes":
            # However the run ended (a failure, Ctrl-C, an error): no Job of it stays behind.
            engine.jobs.terminate_all()
        progress.close(engine)
        if publisher is not None:
            publisher.close()
    if publisher is not None and not outcome.state.finished:
        # After the pools stopped: a stopping worker hands its prefetched messages back.
        withdraw_queued(settings, routing, engine.run_id)
    data = summary(engine, outcome)
    if json_summary:
        try:
            write_summary(json_summary, data)
        except ConfigError as exc:  # as for the timeline: the run's outcome still counts
            click.echo(f"hyperpool: warning: {exc}", err=True)
    if timeline:
        from hyperpool.engine.timeline import records_from_run, write_timeline

        records = records_from_run(engine, outcome)
        if records:
            try:
                write_timeline(records, timeline, title=f"{dag.workflow.name} ({engine.run_id})")
                click.echo(f"hyperpool: timeline of {plural(len(records), 'task')}: {timeline}",
                           err=True)
            except ConfigError as exc:  # e.g. the disk filled up: the run's outcome still counts
                click.echo(f"hyperpool: warning: {exc}", err=True)
    click.echo(f"hyperpool: {data['succeeded']}/{plural(data['tasks_total'], 'task')} succeeded, "
               f"{data['failed']} failed, {data['skipped']} skipped, makespan "
               f"{data['makespan_seconds']:.2f}s", err=True)
    if outcome.interrupted:
        cancelled = plural(outcome.cancelled_in_flight, "in-flight task")
        click.echo(f"hyperpool: interrupted; {cancelled} cancelled, {data['not_run']} not run",
                   err=True)
        sys.exit(130)
    if outcome.failures:
        raise WorkflowFailed("workflow failed:\n" + failure_report(outcome, workdir))


def withdraw_queued(settings: Settings, routing: Routing, run_id: str) -> None:
    """Leave no work of a stopped run behind in the pool queues (executor/withdraw.py)."""
    from hyperpool.executor.withdraw import withdraw

    try:
        removed = withdraw(settings, sorted(set(routing.queues.values())), run_id)
    except Exception as exc:  # the broker went away: the cancel mark still makes workers skip
        click.echo(f"hyperpool: warning: could not withdraw the run's queued tasks: {exc}; "
                   "workers will skip them as cancelled", err=True)
        return
    if removed:
        click.echo(f"hyperpool: {plural(removed, 'queued task message')} withdrawn", err=True)


def parse_job_resources(text: str | None) -> dict[str, dict[str, str]]:
    """``cpu=500m,memory=512Mi`` as the container's equal requests and limits (Guaranteed,
    as the seed's WorkerPools set theirs)."""
    if not text:
        return {}
    amounts: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in ("cpu", "memory") or not value:
            raise ConfigError(f"{item.strip()!r}: expected cpu=QUANTITY or memory=QUANTITY, "
                              "e.g. cpu=500m,memory=512Mi", source="--job-resources")
        try:
            parse_quantity(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}", source="--job-resources") from None
        amounts[key] = value
    return {"requests": dict(amounts), "limits": dict(amounts)}


def check_job_options(job_model: str, *, volume_claim: str | None, host_path: bool,
                      redis_url: str | None, resources: str | None = None) -> None:
    """Refuse job-model options that would be ignored or contradict each other (before any
    service is contacted: they are the user's typo, not the cluster's state)."""
    given = [name for name, value in (("--job-volume-claim", volume_claim),
                                      ("--job-host-path", host_path),
                                      ("--job-redis-url", redis_url),
                                      ("--job-resources", resources)) if value]
    if given and job_model != "kubernetes":
        raise ConfigError(f"only used with --job-model kubernetes (not {job_model})",
                          source=given[0])
    if volume_claim and host_path:
        raise ConfigError("mount the work dir from a claim or from the node, not both: drop "
                          "--job-volume-claim or --job-host-path", source="--job-host-path")
    if volume_claim is not None and not volume_claim.strip():
        raise ConfigError("empty claim name", source="--job-volume-claim")
    parse_job_resources(resources)


def unreachable_from_pods(redis_url: str) -> str | None:
    """A warning when the Jobs' pods would be told a loopback Redis address: inside a pod,
    127.0.0.1 is the pod itself, so every task would fail without reporting."""
    host = (urlsplit(redis_url).hostname or "").lower()
    if host == "localhost" or host == "::1" or host.startswith("127."):
        return (f"the Jobs' pods would report to Redis at {mask_url(redis_url)}, a loopback "
                "address they cannot reach; pass --job-redis-url with an address pods reach")
    return None


def kubernetes_jobs(settings: Settings, kubeconfig: str | None, image: str, namespace: str, *,
                    work_dir: Path | None = None, volume_claim: str | None = None,
                    host_path: bool = False, redis_url: str | None = None,
                    resources: dict[str, dict[str, str]] | None = None,
                    ) -> Callable[[Engine], object]:
    """A factory of the in-cluster job model for :class:`Engine` (imported only when used).

    Checks what can be checked before any task runs: the kubeconfig, and that the work dir's
    claim exists in the Jobs' namespace.
    """
    from hyperpool.controller.api import KubeApi
    from hyperpool.controller.job_launcher import KubeJobLauncher
    from hyperpool.controller.jobs import check_volume_claim

    try:
        api = KubeApi.from_config(kubeconfig)
    except Exception as exc:  # kubeconfig problems surface as assorted client errors
        raise ServiceUnavailable(f"cannot use the kubeconfig {kubeconfig or '$KUBECONFIG'}: "
                                 f"{exc}") from None
    if volume_claim:
        warning = check_volume_claim(api, namespace, volume_claim)
        if warning:
            click.echo(f"hyperpool: warning: {warning}", err=True)
    pod_redis = redis_url or settings.redis_url
    warning = unreachable_from_pods(pod_redis)
    if warning:
        click.echo(f"hyperpool: warning: {warning}", err=True)
    # A Job only reports to Redis; it never needs the broker's credentials. REDIS_URL is the
    # name HyperFlow's own executor images read.
    env = {"HYPERPOOL_REDIS_URL": pod_redis, "REDIS_URL": pod_redis}
    work = str(Path(work_dir).resolve()) if work_dir is not None else None
    return lambda engine: KubeJobLauncher(api, engine.client, engine.stream, engine.run_id,
                                          namespace=namespace, image=image, env=env,
                                          work_dir=work, work_claim=volume_claim or None,
                                          work_host_path=host_path, resources=resources)
