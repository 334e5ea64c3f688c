"""k8s/testcluster/lock.sh: a stopped build takes its children with it and releases its lock.

A build killed under a test timeout once left an orphan ``go build`` holding the build lock for
12 minutes. Here a script uses lock.sh as build.sh does, runs a long child, and is stopped the
ways a build is stopped: SIGTERM (make, a timeout), SIGINT (Ctrl-C to the script alone) and
SIGKILL (nothing of the script runs any more).
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

LOCK_SH = Path(__file__).resolve().parents[2] / "k8s" / "testcluster" / "lock.sh"


def children_running(tag: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"sleep {tag}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def lock_is_free(lock: Path) -> bool:
    return subprocess.run(["flock", "-n", str(lock), "true"]).returncode == 0


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=lambda s: s.name)
def test_a_stopped_build_stops_its_children_and_releases_the_lock(tmp_path, sig):
    lock = tmp_path / ".build.lock"
    tag = f"3{uuid.uuid4().int % 10**6:06d}"  # a unique `sleep N` to find the child by
    script = f'set -euo pipefail; . "{LOCK_SH}"; take_lock "{lock}"; run sleep {tag}; echo done'
    proc = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: children_running(tag)), "the child never started"
        assert not lock_is_free(lock), "the script must hold the lock while it builds"
        proc.send_signal(sig)
        proc.wait(timeout=20)
        assert wait_until(lambda: not children_running(tag)), (
            f"after {sig.name} the child still runs: {children_running(tag)}")
        assert wait_until(lambda: lock_is_free(lock)), f"after {sig.name} the lock is held"
        assert "done" not in proc.stdout.read()
        if sig is not signal.SIGKILL:
            assert proc.returncode == 130
            assert "its children are stopped too" in proc.stderr.read()
    finally:
        proc.kill()
        for pid in children_running(tag):
            subprocess.run(["kill", "-9", str(pid)])


def test_a_second_build_waits_for_the_first_and_says_so(tmp_path):
    lock = tmp_path / ".build.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "2"])
    try:
        time.sleep(0.3)
        done = subprocess.run(["bash", "-c", f'. "{LOCK_SH}"; take_lock "{lock}"; echo got it'],
                              capture_output=True, text=True, timeout=30)
    finally:
        holder.wait(timeout=30)
    assert "another build.sh holds" in done.stdout and "got it" in done.stdout
