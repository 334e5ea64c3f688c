"""``hyperpool controller``: run the WorkerPool operator in this process (kopf)."""

from __future__ import annotations

import logging
import os
from typing import Any

import click

from hyperpool.errors import ConfigError


@click.command("controller")
@click.option("--namespace", "-n", "namespaces", multiple=True,
              help="Namespace to serve (repeatable; glob patterns allowed).")
@click.option("--all-namespaces", "-A", is_flag=True, help="Serve every namespace.")
@click.option("--templates", "templates_dir", type=click.Path(file_okay=False, exists=True),
              help="Directory with deployment.yml / prometheus-rule.yml / scaledobject.yml "
                   "overriding the built-in children (the HyperFlow operator's config.data "
                   "ConfigMap).")
@click.option("--prometheus-url", envvar="HYPERPOOL_PROMETHEUS_URL",
              help="Prometheus for pools whose spec has no prometheusUrl.")
@click.option("--interval", default=30.0, show_default=True, type=click.FloatRange(1),
              help="Seconds between drift repairs / status refreshes of each pool.")
@click.option("--termination-grace", default=600, show_default=True, type=click.IntRange(1),
              help="Seconds a worker pod may take to finish its task on scale-down.")
@click.option("--liveness", default="http://0.0.0.0:8080/healthz", show_default=True,
              help="Liveness endpoint URL ('' to disable).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, exists=True),
              help="Kubeconfig file (default: in-cluster, then $KUBECONFIG).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), envvar="HYPERPOOL_METRICS_PORT",
              help="Serve Prometheus /metrics (reconcile durations and errors, replicas).")
@click.option("--verbose", "-v", is_flag=True)
def controller(namespaces: tuple[str, ...], all_namespaces: bool, templates_dir: str | None,
               prometheus_url: str | None, interval: float, termination_grace: int,
               liveness: str, kubeconfig: str | None, metrics_port: int | None,
               verbose: bool) -> None:
    """Keep each WorkerPool's Deployment, PrometheusRule and ScaledObject in line."""
    import kopf

    from hyperpool.controller.handlers import build_registry
    from hyperpool.controller.plan import ControllerConfig
    from hyperpool.controller.templates import TemplateError, Templates

    if bool(namespaces) == all_namespaces:
        raise ConfigError("pass --namespace NS (one or more) or --all-namespaces")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        templates = Templates.from_directory(templates_dir) if templates_dir else Templates()
    except TemplateError as exc:
        raise ConfigError(str(exc)) from None
    config = ControllerConfig(templates=templates, default_prometheus_url=prometheus_url,
                              termination_grace=termination_grace)
    registry = build_registry(kube_api(kubeconfig), config, interval=interval,
                              namespaces=namespaces)
    if metrics_port:
        from hyperpool import metrics

        metrics.serve(metrics_port)
    kopf.run(registry=registry, standalone=True, clusterwide=all_namespaces,
             namespaces=list(namespaces), liveness_endpoint=liveness or None)


def kube_api(kubeconfig: str | None) -> Any:
    """The API client, or one line saying why there is none (no service account, no
    kubeconfig, a broken one) instead of the kubernetes client's traceback."""
    from kubernetes.config import ConfigException

    from hyperpool.controller.api import KubeApi
    from hyperpool.errors import ServiceUnavailable

    try:
        return KubeApi.from_config(kubeconfig)
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ServiceUnavailable(
            f"no Kubernetes credentials: not in a cluster, and the kubeconfig {where} cannot "
            f"be used ({exc}); pass --kubeconfig FILE or set KUBECONFIG") from None
