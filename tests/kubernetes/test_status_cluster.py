"""`hyperpool status --kubeconfig` against WorkerPools on the real API server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.kubernetes.conftest import create_in, wait_for
from tests.kubernetes.test_controller_cluster import ready
from tests.unit.test_controller_support import seed_manifest_text

pytestmark = pytest.mark.kubernetes


def test_status_shows_pools_and_conditions(api, namespace, kubeconfig):
    create_in(api, namespace, yaml.safe_load(seed_manifest_text()))
    wait_for(lambda: ready(api, namespace), what="Ready")
    proc = subprocess.run([sys.executable, "-m", "hyperpool", "status", "--kubeconfig",
                           kubeconfig, "--namespace", namespace, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["cluster"]
    assert (row["name"], row["task_type"], row["queue"]) == ("mproject", "mProject",
                                                             f"{namespace}.mProject")
    assert (row["ready"], row["reason"]) == ("True", "NoResourceQuota")
    table = subprocess.run([sys.executable, "-m", "hyperpool", "status", "--kubeconfig",
                            kubeconfig, "--namespace", namespace], capture_output=True,
                           text=True, timeout=60)
    assert "mproject" in table.stdout and "NoResourceQuota" in table.stdout


def test_status_with_a_bad_kubeconfig_is_one_clear_line(tmp_path):
    bad = tmp_path / "kubeconfig"
    bad.write_text("not: [a kubeconfig")
    proc = subprocess.run([sys.executable, "-m", "hyperpool", "status", "--kubeconfig",
                           str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "cannot use the kubeconfig" in proc.stderr
    assert "Traceback" not in proc.stderr
