"""Engine crash and ``--resume``: nothing completed runs again, nothing in flight is lost."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter

from tests.conftest import hyperpool_env, wait_for
from tests.integration.test_engine import workdir_for

N = 24


def workflow() -> dict:
    procs = [{"name": "step", "ins": [0], "outs": [i + 1], "config": {"executor": {
        "executable": "sh", "args": ["-c", f"echo p{i} >> ran.txt; sleep 0.3"]}}}
        for i in range(N)]
    procs.append({"name": "longjob", "ins": [0], "outs": [N + 1], "config": {"executor": {
        "executable": "sh", "args": ["-c", "echo longjob >> ran.txt; sleep 4"]}}})
    procs.append({"name": "gather", "ins": list(range(1, N + 2)), "outs": [], "config": {
        "executor": {"executable": "sh", "args": ["-c", "echo gather >> ran.txt"]}}})
    signals = [{"name": "start", "data": [{}]}] + [{"name": f"s{i}"} for i in range(N + 1)]
    return {"name": "resume", "processes": procs, "signals": signals}


def test_kill_engine_and_resume(tmp_path, namespace, start_worker):
    work = workdir_for(tmp_path, workflow(), ["step"])
    for _ in range(2):
        start_worker(f"{namespace}.step", work_dir=work)
    env = hyperpool_env(namespace, work)
    argv = [sys.executable, "-m", "hyperpool", "run", str(work), "--no-local-pools"]
    first = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    ran = work / "ran.txt"
    wait_for(lambda: ran.exists() and len(ran.read_text().split()) >= 8, what="8 tasks run")
    first.send_signal(signal.SIGKILL)
    first.wait()
    run_id = json.loads((work / ".hyperpool" / "last-run.json").read_text())["run_id"]
    second = subprocess.run([*argv, "--resume", "--json-summary", str(tmp_path / "s.json")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert f"run {run_id}" in second.stderr and "resuming:" in second.stderr
    assert "1 running job adopted" in second.stderr
    counts = Counter(ran.read_text().split())
    assert set(counts) == {f"p{i}" for i in range(N)} | {"longjob", "gather"}
    assert counts["longjob"] == 1 and counts["gather"] == 1  # the job was adopted, not rerun
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates <= 2, counts  # at most the tasks that were running at the crash
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["succeeded"] == summary["tasks_total"] == N + 2


def test_resume_without_a_run_is_a_clear_error(tmp_path, namespace):
    work = workdir_for(tmp_path, workflow(), [])
    proc = subprocess.run([sys.executable, "-m", "hyperpool", "run", str(work), "--resume"],
                          env=hyperpool_env(namespace, work), capture_output=True, text=True)
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr
