"""The in-cluster job model on the real API server: one batch/v1 Job per task.

The hollow node runs no containers, so the test plays the pod: it runs the Job's own command
line locally, exactly as the container would, and the engine completes the run from the
result that command reports to the completion stream.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import hyperpool_env
from tests.integration.test_engine import chain, workdir_for
from tests.kubernetes.conftest import wait_for

pytestmark = pytest.mark.kubernetes


def test_unlisted_task_runs_as_a_job(api, namespace, kubeconfig, tmp_path):
    work = workdir_for(tmp_path, chain(("stage", {"executable": "sh", "args": [
        "-c", "echo ran-in-job > out.txt"]})), [])
    run = subprocess.Popen(
        [sys.executable, "-m", "hyperpool", "run", str(work), "--job-model", "kubernetes",
         "--kubeconfig", kubeconfig, "--job-namespace", namespace, "--job-image", "exec:1",
         "--json-summary", str(work / "s.json")],
        env=hyperpool_env(namespace, work), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    jobs = wait_for(lambda: api.list("batch/v1", "Job", namespace), what="the task's Job")
    (job,) = jobs
    spec = job["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    assert spec["backoffLimit"] == 0 and spec["template"]["spec"]["restartPolicy"] == "Never"
    assert container["image"] == "exec:1" and container["command"][:2] == ["hyperpool",
                                                                           "execute"]
    assert container["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e["value"] for e in container["env"]}
    assert "HYPERPOOL_BROKER_URL" not in env and env["HYPERPOOL_NAMESPACE"] == namespace
    run_id = json.loads((work / ".hyperpool" / "last-run.json").read_text())["run_id"]
    assert job["metadata"]["labels"]["hyperflow.agh.edu.pl/run-id"] == run_id
    # Play the pod: the container's command, with the container's environment.
    pod = subprocess.run([sys.executable, "-m", *container["command"]],
                         env={**os.environ, **env}, cwd=work, capture_output=True, text=True,
                         timeout=60)
    assert pod.returncode == 0, pod.stdout + pod.stderr
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert (work / "out.txt").read_text() == "ran-in-job\n"
    summary = json.loads((work / "s.json").read_text())
    assert summary["per_task_type"]["stage"]["model"] == "job" and summary["succeeded"] == 1
    wait_for(lambda: api.list("batch/v1", "Job", namespace) == [], what="the Job deleted")
