"""Workers forked from the template behave like the fresh processes they replace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil

from tests.conftest import hyperpool_env, queue_info, wait_for, worker_pool_yaml


def forked_workers(supervisor: int) -> list[psutil.Process]:
    """The children of the supervisor's template (multiprocessing's forkserver)."""
    found = []
    for child in psutil.Process(supervisor).children():
        if "forkserver" in " ".join(child.cmdline()):
            found += child.children()
    return found


def test_workers_leave_warmly_when_their_supervisor_is_killed(namespace, tmp_path):
    """SIGKILL gives the supervisor no chance to drain: the template leaves with it and its
    workers get the parent-death SIGTERM, a warm shutdown, instead of consuming as orphans."""
    manifest = tmp_path / "pools.yaml"
    manifest.write_text(worker_pool_yaml("kept", "kept", "minReplicaCount: 2\n"
                                         "maxReplicaCount: 2\n"))
    queue = f"{namespace}.kept"
    up = subprocess.Popen([sys.executable, "-m", "hyperpool", "pools", "up", "-f",
                           str(manifest), "--log-dir", str(tmp_path / "logs")],
                          env=hyperpool_env(namespace, tmp_path), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (queue_info(queue) or {}).get("consumers") == 2, timeout=60,
                 what="two consuming workers")
        workers = forked_workers(up.pid)
        assert len(workers) == 2
        # Forked: neither is a child of the supervisor, each leads its own session.
        assert all(w.ppid() != up.pid and os.getsid(w.pid) == w.pid for w in workers)
        up.send_signal(signal.SIGKILL)
        up.wait(timeout=10)
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"orphaned workers: {[p.pid for p in alive]}"
        logs = sorted((tmp_path / "logs").glob("*.log"))
        assert len(logs) == 2
        # SIGTERM, not SIGKILL: each went through Celery's warm shutdown.
        assert all("Warm shutdown" in log.read_text() for log in logs), logs
        wait_for(lambda: (queue_info(queue) or {}).get("consumers") == 0, timeout=30,
                 what="the queue to lose its consumers")
    finally:
        if up.poll() is None:
            for proc in forked_workers(up.pid):
                proc.kill()
            up.kill()
