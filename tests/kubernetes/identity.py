"""Run the real controller as a ServiceAccount, to prove its RBAC is enough and no more.

On Kubernetes 1.20 the token controller creates a ``kubernetes.io/service-account-token`` Secret
for every ServiceAccount; :func:`service_account_kubeconfig` reads it (as the tests' admin) and
writes a kubeconfig that authenticates with that token only. :func:`run_controller` starts
``hyperpool controller`` in a subprocess with it — the command users run, not a test double —
and :func:`can_i` asks the API server's authorizer what that account may do.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from hyperpool.controller.api import KubeApi
from tests.kubernetes.conftest import wait_for

KUBECTL = Path.home() / ".cache/hyperpool/k8s-v1.20.2/bin/kubectl"


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(KUBECTL), "--kubeconfig", kubeconfig, *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def _token(api: KubeApi, namespace: str, name: str) -> str | None:
    account = api.get("v1", "ServiceAccount", namespace, name) or {}
    for ref in account.get("secrets") or []:
        secret = api.get("v1", "Secret", namespace, ref["name"]) or {}
        token = (secret.get("data") or {}).get("token")
        if token:
            return base64.b64decode(token).decode()
    return None


def service_account_kubeconfig(api: KubeApi, admin_kubeconfig: str, namespace: str, name: str,
                               path: Path) -> Path:
    """A kubeconfig for ``system:serviceaccount:<namespace>:<name>`` (token auth only)."""
    token = wait_for(lambda: _token(api, namespace, name), timeout=60,
                     what=f"token of {namespace}/{name}")
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text(encoding="utf-8"))
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": name}}],
    }), encoding="utf-8")
    path.chmod(0o600)
    return path


def can_i_args(verb: str, resource: str) -> list[str]:
    """``kubectl auth can-i`` arguments; ``pods/exec`` is a subresource, not a pod named exec."""
    kind, _, sub = resource.partition("/")
    return ["auth", "can-i", verb, kind, *([f"--subresource={sub}"] if sub else [])]


def can_i(kubeconfig: str, verb: str, resource: str, namespace: str | None) -> bool:
    """The authorizer's answer for the kubeconfig's own identity (``kubectl auth can-i``)."""
    where = ["-n", namespace] if namespace else ["--all-namespaces"]
    out = kubectl(kubeconfig, *can_i_args(verb, resource), *where)
    assert out.stdout.strip() in ("yes", "no"), (verb, resource, out.stdout, out.stderr)
    return out.stdout.strip() == "yes"


@contextmanager
def run_controller(kubeconfig: Path, log: Path, *args: str) -> Iterator[subprocess.Popen]:
    """``hyperpool controller --kubeconfig KC ARGS`` in a subprocess, logging to ``log``."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hyperpool", "controller", "--kubeconfig", str(kubeconfig),
             "--liveness", "", "--interval", "2", "--verbose", *args],
            stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
