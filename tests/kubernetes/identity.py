"""Run the real controller as a ServiceAccount, to prove its RBAC is enough and no more.

:func:`service_account_kubeconfig` asks the TokenRequest API (as the tests' admin) for a token
of the account and writes a kubeconfig that authenticates with that token only.
:func:`run_controller` starts ``hyperpool controller`` in a subprocess with it — the command
users run, not a test double — and :func:`can_i` asks the API server's authorizer what that
account may do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from hyperpool.controller.api import ApiError, KubeApi
from tests.kubernetes.conftest import wait_for

KUBECTL = Path.home() / ".cache/hyperpool/k8s-v1.20.2/bin/kubectl"


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(KUBECTL), "--kubeconfig", kubeconfig, *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def _token(api: KubeApi, namespace: str, name: str) -> str | None:
    """A bound token of the ServiceAccount from the TokenRequest API: Kubernetes stopped
    creating token Secrets in 1.24, and 1.20 serves TokenRequest too."""
    try:
        answer = api.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": 3600}})
    except ApiError:  # the account is not there yet
        return None
    return (answer.get("status") or {}).get("token")


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
def run_controller(kubeconfig: Path, log: Path, *args: str, interval: float = 2
                   ) -> Iterator[subprocess.Popen]:
    """``hyperpool controller --kubeconfig KC ARGS`` in a subprocess, logging to ``log``, with
    KUBECONFIG unset: only the option says where the credentials are."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hyperpool", "controller", "--kubeconfig", str(kubeconfig),
             "--liveness", "", "--interval", str(interval), "--verbose", *args],
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
