"""Typed, validated domain objects shared by every layer.

The task message is HyperFlow's job message, so existing workflow files and executors speak it
unchanged; unknown fields are *kept* (``extra="allow"``) because HyperFlow functions add their
own. The WorkerPool manifest's models are in :mod:`hyperpool.workerpool_spec`; the error
wording for both is here (:func:`describe_validation_error`, :func:`validate`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from hyperpool.errors import ConfigError
from hyperpool.names import ensure_relative_inside, file_name

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
        if isinstance(value, str):
            # Some HyperFlow files give a lone argument as a string: it is that argument. A
            # string with spaces would need a shell's splitting rules, which nobody applies
            # here (argv is passed as is): the author must say where the arguments split.
            if value.split() != [value]:
                raise ValueError(f"args is the string {value!r}: give the arguments as a list, "
                                 f"e.g. {json.dumps(value.split())}")
            return [value]
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
            ensure_relative_inside(file_name(item))
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs_do_not_climb(cls, value: list[Any]) -> list[Any]:
        # Absolute inputs are allowed: real workflows read pre-staged reference data that way
        # (Soykb's /home/ubuntu/data/...). Climbing out of the work dir with '..' is not.
        for item in value:
            name = file_name(item)
            if ".." in Path(name).parts or "\x00" in name:
                raise ValueError(f"input {name!r} must not contain '..'")
        return value


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


def describe_validation_error(exc: ValidationError, *, prefix: str = "") -> str:
    """Turn pydantic's report into ``field.path: problem`` lines users can act on.

    ``prefix`` is where the validated object sits (``spec`` for a WorkerPoolSpec). A validator
    of a whole list names the entry as ``[i]: problem``, which reads ``volumeMounts[0]: ...``.
    """
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "") or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{loc}{'' if msg.startswith('[') else ': '}{msg}")
    return "; ".join(lines)


def validate(model: type[BaseModel], data: Any, *, source: str, where: str | None = None) -> Any:
    """Validate ``data`` as ``model`` or raise :class:`ConfigError` naming file and field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc), source=source, where=where) from None
