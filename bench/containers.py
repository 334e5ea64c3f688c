"""Containers: what the images cost to rebuild, a container pool's cold start against a process
pool's, and the compose stack from ``up`` to a finished Montage run.

* **images, cached**: ``executors/build-images.sh`` with nothing changed (what a second
  ``make test`` pays); the cold build is in the closing notes' CI timing, since measuring it
  here would throw away the cache every run;
* **0 -> 1 and 0 -> N**: :func:`bench.bench_scaling.measure` for the process runtime and for
  ``--runtime docker`` (hyperpool/executor-generic), rounds of each interleaved;
* **compose**: ``docker compose up`` of docker-compose.yml on free ports until the engine
  exits (the Montage example, 3x3 sky), then ``down --volumes``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import bench_scaling
from bench.common import REPO, median


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def images_cached() -> float:
    t0 = time.monotonic()
    subprocess.run(["bash", str(REPO / "executors" / "build-images.sh")], check=True,
                   capture_output=True, timeout=1800)
    return time.monotonic() - t0


def compose_run() -> float:
    """Seconds from ``docker compose up`` to the engine's exit (then everything is removed)."""
    project = f"hpbench{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="hyperpool-bench-compose-"))
    work.chmod(0o777)
    env = dict(os.environ, HYPERPOOL_WORK=str(work), HYPERPOOL_COOLDOWN="5",
               **{f"HYPERPOOL_{k}_PORT": str(_free_port())
                  for k in ("RABBITMQ", "RABBITMQ_UI", "RABBITMQ_METRICS", "PROMETHEUS")})
    base = ["docker", "compose", "-p", project, "-f", str(REPO / "docker-compose.yml")]
    t0 = time.monotonic()
    try:
        subprocess.run([*base, "up", "--detach", "--no-build"], env=env, check=True,
                       capture_output=True, timeout=600)
        subprocess.run([*base, "wait", "engine"], env=env, check=True, capture_output=True,
                       timeout=600)
        return time.monotonic() - t0
    finally:
        subprocess.run([*base, "down", "--volumes", "--remove-orphans", "--timeout", "10"],
                       env=env, capture_output=True, timeout=300)
        subprocess.run(["rm", "-rf", str(work)], check=False)


def measure(rounds: int = 3) -> dict[str, Any]:
    from hyperpool.local.containers import ContainerRuntime

    out: dict[str, Any] = {"images_cached": images_cached(), "process": {}, "docker": {}}
    runtimes = {"process": None, "docker": ContainerRuntime()}
    for _ in range(rounds):  # interleaved: one round of each at a time
        for name, runtime in runtimes.items():
            got = bench_scaling.measure(2, 1, cooldown=1.0, runtime=runtime)
            for key, values in got.items():
                out[name].setdefault(key, []).extend(values)
    out["compose"] = [compose_run() for _ in range(2)]
    return out


def section(res: dict[str, Any]) -> list[str]:
    c = res["containers"]
    rows = [("0->1: first task started", "first"), ("0->2: 2 tasks started", "started"),
            ("back to 0 after the last result", "to_zero")]
    out = ["## Containers", "",
           "`bench/containers.py`: a pool at zero (max 2, cooldown 1 s) gets 2 tasks of 3 s, as "
           "in section 5, once with worker processes and once with `--runtime docker` "
           "(hyperpool/executor-generic), rounds interleaved; then `docker compose up` of the "
           "Montage example (3x3 sky) until the engine exits, and `make images` with nothing "
           "changed.", "",
           "| | processes, median (runs) | containers, median (runs) | containers / processes |",
           "|---|---|---|---|"]
    for label, key in rows:
        p, d = c["process"][key], c["docker"][key]
        out.append(f"| {label} | {median(p):.2f} s ({', '.join(f'{v:.2f}' for v in p)}) | "
                   f"{median(d):.2f} s ({', '.join(f'{v:.2f}' for v in d)}) | "
                   f"{median(d) / median(p):.2f}x |")
    out += ["", f"`docker compose up` to a finished Montage run: "
                f"{', '.join(f'{v:.1f} s' for v in c['compose'])}; `make images` with "
                f"nothing changed: {c['images_cached']:.1f} s.", ""]
    return out
