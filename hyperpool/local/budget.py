"""The local budget: the ResourceQuota of a machine without Kubernetes.

On Kubernetes, how many workers fit is decided by the namespace's ResourceQuota. Locally the
same formula (:mod:`hyperpool.scaling`) needs a budget, so the supervisor plays the quota with
this machine's usable cores and memory, or with what ``--budget-cpu``/``--budget-memory`` say.

Defaults, and why:

* **CPU budget** = the cores this process may use: the CPU affinity mask, lowered by a cgroup v2
  ``cpu.max`` quota when one is set (a container limited with ``cpus: 2`` on a 32-core host
  must not start 64 workers).
* **Memory budget** = 80 % of physical memory (or of the cgroup's ``memory.max``), leaving room
  for the broker, Redis, the engine and the job-model processes.
* **Worker request** for a pool whose manifest has no ``initialResources.requests``: 500m CPU
  and 256Mi memory. An idle worker is two processes of ~110 MB RSS, and HyperFlow tasks spend
  part of their time on file I/O, so two workers per core keep the cores busy without
  thrashing: a 2-core machine runs 4 workers in total (shared between pools in proportion to
  their backlogs). Manifests that state requests (the HyperFlow operator's ``cpu: "0.5"``) are
  used as written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psutil

from hyperpool.errors import ConfigError
from hyperpool.quantities import format_bytes, format_cpu, parse_quantity

DEFAULT_WORKER_CPU = Decimal("0.5")
DEFAULT_WORKER_MEMORY = Decimal(256 * 2**20)
MEMORY_SHARE = Decimal("0.8")
CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Resources:
    """CPU cores and memory bytes; used for budgets, requests and sums of requests."""

    cpu: Decimal
    memory: Decimal

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory)

    def fits_in(self, budget: Resources) -> bool:
        return self.cpu <= budget.cpu and self.memory <= budget.memory

    def as_mapping(self) -> dict[str, Decimal]:
        """The shape :func:`hyperpool.scaling.desired_replicas` takes for budgets and requests."""
        return {"cpu": self.cpu, "memory": self.memory}

    def describe(self) -> str:
        return f"cpu {format_cpu(self.cpu)}, memory {format_bytes(self.memory)}"

    def short(self) -> str:
        return f"{format_cpu(self.cpu)}/{format_bytes(self.memory)}"

    def to_json(self) -> dict[str, str]:
        return {"cpu": format_cpu(self.cpu), "memory": format_bytes(self.memory)}


NOTHING = Resources(Decimal(0), Decimal(0))
DEFAULT_WORKER_REQUEST = Resources(DEFAULT_WORKER_CPU, DEFAULT_WORKER_MEMORY)


def _cgroup_cpu_limit() -> Decimal | None:
    try:
        quota, period = (CGROUP / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return Decimal(quota) / Decimal(period)


def _cgroup_memory_limit() -> Decimal | None:
    try:
        text = (CGROUP / "memory.max").read_text().strip()
    except OSError:
        return None
    return None if text == "max" or not text.isdigit() else Decimal(text)


def machine_cpu() -> Decimal:
    """Cores usable by this process (affinity mask, capped by a cgroup v2 CPU quota)."""
    try:
        cores = Decimal(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = Decimal(os.cpu_count() or 1)
    limit = _cgroup_cpu_limit()
    return min(cores, limit) if limit is not None else cores


def machine_memory() -> Decimal:
    """80 % of physical memory or of the cgroup's memory limit, whichever is lower."""
    total = Decimal(psutil.virtual_memory().total)
    limit = _cgroup_memory_limit()
    if limit is not None:
        total = min(total, limit)
    mebibytes = int(total * MEMORY_SHARE) // 2**20  # whole Mi, so it prints as "18956Mi"
    return Decimal(mebibytes * 2**20)


def _quantity(value: str | Decimal | int | float, what: str) -> Decimal:
    if isinstance(value, Decimal):
        amount = value
    else:
        try:
            amount = parse_quantity(value)
        except ValueError as exc:
            raise ConfigError(str(exc), source=what) from None
    if amount <= 0:
        raise ConfigError(f"must be positive, got {value!r}", source=what)
    return amount


def local_budget(cpu: str | Decimal | int | float | None = None,
                 memory: str | Decimal | int | float | None = None) -> Resources:
    """The budget for worker pools: the given quantities, else this machine's (see above)."""
    return Resources(
        machine_cpu() if cpu is None else _quantity(cpu, "--budget-cpu"),
        machine_memory() if memory is None else _quantity(memory, "--budget-memory"),
    )


def worker_request(cpu: str | Decimal | int | float | None = None,
                   memory: str | Decimal | int | float | None = None) -> Resources:
    """The request of a worker whose pool states none (defaults: 500m, 256Mi)."""
    return Resources(
        DEFAULT_WORKER_CPU if cpu is None else _quantity(cpu, "--worker-cpu"),
        DEFAULT_WORKER_MEMORY if memory is None else _quantity(memory, "--worker-memory"),
    )
