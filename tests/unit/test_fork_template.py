"""The fork template: its preload is inert, and a forked child is set up like a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hyperpool.executor import template

INERT = """
import os, sys, threading
from hyperpool.executor.template import PRELOAD
for name in PRELOAD:
    __import__(name)
links = []
for fd in os.listdir('/proc/self/fd'):
    try:
        links.append(os.readlink(f'/proc/self/fd/{fd}'))
    except OSError:
        pass  # the listing's own descriptor, closed by now
print(threading.active_count(), sum(1 for x in links if x.startswith('socket:')),
      'hyperpool.executor.app' in sys.modules)
"""


def test_the_preload_starts_no_thread_opens_no_socket_and_builds_no_app():
    out = subprocess.run([sys.executable, "-c", INERT], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    # One thread, no socket: a fork copies no half-used connection. The Celery app is built
    # in the child, from the child's own environment.
    assert out == ["1", "0", "False"]


def test_a_forked_job_gets_its_env_cwd_session_and_stdio(tmp_path: Path):
    marker = tmp_path / "seen"
    message = {"executable": "sh", "taskId": "t1",
               "args": ["-c", f'echo "$PROBE $(pwd) $(ps -o sid= -p $$)" > {marker}; '
                              'echo to-stdout; exit 3']}
    log = tmp_path / "child.log"
    env = {**os.environ, "PROBE": "from-parent"}
    proc = template.start(["execute", "--message-json", json.dumps(message)], env=env,
                          cwd=tmp_path, log_path=log)
    assert proc.wait(timeout=60) == 3  # the command's exit code is the process's
    probe, cwd, sid = marker.read_text().split()
    assert (probe, cwd, int(sid)) == ("from-parent", str(tmp_path), proc.pid)
    assert "to-stdout" not in log.read_text()  # the task's stdout is its own (HyperFlow's)


def test_a_user_error_in_the_child_is_one_line_in_its_log(tmp_path: Path):
    log = tmp_path / "child.log"
    proc = template.start(["execute", "--message-json", "{not json"], env=dict(os.environ),
                          cwd=tmp_path, log_path=log)
    assert proc.wait(timeout=60) != 0
    text = log.read_text()
    assert "malformed JSON" in text and "Traceback" not in text


def test_signals_reach_the_child_and_poll_reports_them(tmp_path: Path):
    message = {"executable": "sleep", "args": ["30"], "taskId": "t2"}
    proc = template.start(["execute", "--message-json", json.dumps(message)],
                          env=dict(os.environ), cwd=tmp_path)
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.2)
    time.sleep(0.3)
    proc.kill()
    assert proc.wait(timeout=30) == -9
    subprocess.run(["pkill", "-f", "sleep 30"], check=False)  # its orphaned command


def test_the_switch_turns_the_template_off():
    assert template.enabled({"HYPERPOOL_FORK_TEMPLATE": "0"}) is False
    assert template.enabled({"HYPERPOOL_FORK_TEMPLATE": "no"}) is False
    assert template.enabled({}) is True
