"""Private RabbitMQ and Redis servers for fault tests (own node, ports and data dir).

Restarting the machine's shared broker would disturb everything else running on it, so tests
that stop and start services run their own, on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not come up within {timeout}s")


class PrivateRabbit:
    """A second RabbitMQ node. Debian's ``rabbitmq-server`` drops root for the ``rabbitmq``
    user, so the node's directory lives outside pytest's 0700 tmp dirs and is chowned."""

    def __init__(self):
        base = Path(tempfile.mkdtemp(prefix="hyperpool-rmq-"))
        os.chmod(base, 0o755)
        self.base = base
        self.port = free_port()
        self.node = f"hptest-{uuid.uuid4().hex[:8]}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "mnesia").mkdir(exist_ok=True)
        (base / "log").mkdir(exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n")
        if os.geteuid() == 0:
            for path in [base, *base.rglob("*")]:
                with contextlib.suppress(LookupError):
                    shutil.chown(path, "rabbitmq", "rabbitmq")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def env(self) -> dict[str, str]:
        return dict(
            os.environ, RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()), RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq"),
            RABBITMQ_PID_FILE=str(self.base / "pid"),
            RABBITMQ_FEATURE_FLAGS_FILE=str(self.base / "feature_flags"),
            ERL_CRASH_DUMP=str(self.base / "erl_crash.dump"),
        )

    def _accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self) -> None:
        self.proc = subprocess.Popen(["rabbitmq-server"], env=self.env(),
                                     stdout=(self.base / "server.out").open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        _wait(self._accepting, 60, f"RabbitMQ node {self.node}")
        subprocess.run(["rabbitmqctl", "-n", self.node, "await_startup", "--timeout", "60"],
                       env=self.env(), check=True, capture_output=True)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], env=self.env(),
                       capture_output=True, timeout=60)
        if self.proc is not None:
            self.proc.wait(timeout=60)
        _wait(lambda: not self._accepting(), 30, "RabbitMQ stop")

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


class PrivateRedis:
    def __init__(self, base: Path):
        self.base = base
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # appendonly: results written before the restart must still be there after it.
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             str(self.base), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=(self.base / "redis.out").open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True)
        client = redis.Redis(port=self.port)
        _wait(lambda: _ping(client), 20, "private redis")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
