"""Typed, validated domain objects shared by every layer.

The task message is HyperFlow's job message, so existing workflow files and executors speak
it unchanged; unknown fields are *kept* (``extra="allow"``) because HyperFlow functions add
their own. The WorkerPool spec is the seed's ``hyperflow.agh.edu.pl/v1`` schema: fields keep
their camelCase names so a manifest validates as written, and unknown fields are rejected so
a typo (``maxReplicas``) is an error rather than a silently ignored knob.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hyperpool.errors import ConfigError
from hyperpool.quantities import parse_quantity

STDERR_TAIL_BYTES = 4096


class TaskMessage(BaseModel):
    """One HyperFlow job: what to run, where, and where its output goes."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    executable: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    shell: bool = False
    stdout: str | None = None
    stderr: str | None = None
    stdoutAppend: str | None = None  # noqa: N815 - HyperFlow's field name
    stderrAppend: str | None = None  # noqa: N815
    inputs: list[Any] = Field(default_factory=list)
    outputs: list[Any] = Field(default_factory=list)
    work_dir: str | None = None
    taskId: str | None = None  # noqa: N815
    name: str | None = None

    @field_validator("args", mode="before")
    @classmethod
    def _args_as_strings(cls, value: Any) -> Any:
        # HyperFlow files carry numbers in args (e.g. mProjectPP "-x", 0.9); a command line is text.
        if isinstance(value, list):
            return [
                json.dumps(v) if isinstance(v, bool) else str(v)
                if isinstance(v, (int, float, str)) else v
                for v in value
            ]
        return value

    @field_validator("stdout", "stderr", "stdoutAppend", "stderrAppend")
    @classmethod
    def _redirect_stays_inside(cls, value: str | None) -> str | None:
        if value is not None:
            ensure_relative_inside(value)
        return value

    @field_validator("outputs")
    @classmethod
    def _outputs_stay_inside(cls, value: list[Any]) -> list[Any]:
        for item in value:
            ensure_relative_inside(_file_name(item))
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs_do_not_climb(cls, value: list[Any]) -> list[Any]:
        # Absolute inputs are allowed: real workflows read pre-staged reference data that way
        # (Soykb's /home/ubuntu/data/...). Climbing out of the work dir with '..' is not.
        for item in value:
            name = _file_name(item)
            if ".." in Path(name).parts or "\x00" in name:
                raise ValueError(f"input {name!r} must not contain '..'")
        return value


def _file_name(item: Any) -> str:
    """HyperFlow lists files as names or as ``{"name": ...}`` objects."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return item["name"]
    raise ValueError(f"expected a file name or an object with a 'name', got {item!r}")


def ensure_relative_inside(name: str) -> str:
    """Reject a file name that could escape the task's work dir (absolute or with ``..``)."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid file name {name!r}")
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise ValueError(f"file name {name!r} must be relative to the work dir without '..'")
    return name


class TaskResult(BaseModel):
    """What an executor reports back for one attempt of one task."""

    model_config = ConfigDict(extra="allow")

    task_id: str
    attempt: int = 1
    exit_code: int
    started: float
    finished: float
    worker: str
    stderr_tail: str = ""
    error: str | None = None
    model: str = "pool"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None

    @property
    def seconds(self) -> float:
        return max(0.0, self.finished - self.started)


class ExecutionModel(BaseModel):
    """One entry of ``workflow.config.executionModels.json``: a task type run by a pool."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    queue: str | None = Field(default=None, min_length=1)


def _quantity(value: Any, what: str) -> Decimal:
    try:
        return parse_quantity(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


class ResourceAmounts(BaseModel):
    """``cpu`` and ``memory`` as Kubernetes quantities, kept as written and parsed on demand."""

    model_config = ConfigDict(extra="forbid")

    cpu: str | None = None
    memory: str | None = None

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _check(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"expected a quantity string such as '500m' or '512Mi', got {value!r}")
        _quantity(value, "quantity")
        return str(value)

    @property
    def cpu_cores(self) -> Decimal | None:
        return None if self.cpu is None else parse_quantity(self.cpu)

    @property
    def memory_bytes(self) -> Decimal | None:
        return None if self.memory is None else parse_quantity(self.memory)


class InitialResources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: ResourceAmounts = Field(default_factory=ResourceAmounts)
    limits: ResourceAmounts = Field(default_factory=ResourceAmounts)


class WorkerPoolSpec(BaseModel):
    """``spec`` of a WorkerPool, exactly the seed's fields (issue-6 fields extend this)."""

    model_config = ConfigDict(extra="forbid")

    taskType: str = Field(min_length=1)  # noqa: N815
    image: str | None = None
    rabbitHostname: str | None = None  # noqa: N815
    prometheusUrl: str | None = None  # noqa: N815
    redisUrl: str | None = None  # noqa: N815
    queueName: str | None = Field(default=None, min_length=1)  # noqa: N815
    minReplicaCount: int = Field(default=0, ge=0)  # noqa: N815
    maxReplicaCount: int = Field(default=50, ge=0)  # noqa: N815
    initialResources: InitialResources = Field(default_factory=InitialResources)  # noqa: N815
    # Beyond the seed (additive, optional): worker pods' PriorityClass, e.g. the
    # hyperflow-worker class a scoped ResourceQuota bounds (k8s/examples/).
    priorityClassName: str | None = Field(default=None, min_length=1)  # noqa: N815

    @model_validator(mode="after")
    def _min_not_above_max(self) -> WorkerPoolSpec:
        if self.minReplicaCount > self.maxReplicaCount:
            raise ValueError(
                f"minReplicaCount ({self.minReplicaCount}) must not exceed "
                f"maxReplicaCount ({self.maxReplicaCount})"
            )
        return self


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    namespace: str | None = None


class WorkerPool(BaseModel):
    """A whole WorkerPool manifest as a user would ``kubectl apply`` it."""

    model_config = ConfigDict(extra="forbid")

    apiVersion: str  # noqa: N815
    kind: str
    metadata: ObjectMeta
    spec: WorkerPoolSpec
    status: dict[str, Any] | None = None

    @field_validator("apiVersion")
    @classmethod
    def _api_version(cls, value: str) -> str:
        if value != "hyperflow.agh.edu.pl/v1":
            raise ValueError(f"expected 'hyperflow.agh.edu.pl/v1', got {value!r}")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value != "WorkerPool":
            raise ValueError(f"expected 'WorkerPool', got {value!r}")
        return value


def describe_validation_error(exc: ValidationError) -> str:
    """Turn pydantic's report into ``field.path: problem`` lines users can act on."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{loc}: {msg}")
    return "; ".join(lines)


def validate(model: type[BaseModel], data: Any, *, source: str, where: str | None = None) -> Any:
    """Validate ``data`` as ``model`` or raise :class:`ConfigError` naming file and field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc), source=source, where=where) from None
