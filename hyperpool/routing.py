"""Which task types run in a pool, and the queue each pool consumes.

Engine and pools must compute the same queue name or tasks wait forever in a queue nobody
reads, so both call :func:`queue_for` (the engine with an executionModels entry, a WorkerPool
with its spec): ``<namespace>.<taskType>`` unless ``queue``/``queueName`` overrides it.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hyperpool.errors import ConfigError
from hyperpool.models import ExecutionModel, validate
from hyperpool.names import ensure_queue_name
from hyperpool.workerpool_spec import WorkerPoolSpec

EXECUTION_MODELS_FILE = "workflow.config.executionModels.json"


def queue_for(task_type: str, namespace: str, override: str | None = None) -> str:
    """The queue a task type's pool consumes in ``namespace``; :class:`ConfigError` (without a
    source: callers add theirs) when RabbitMQ could not take the name."""
    queue = override or f"{namespace}.{task_type}"
    try:
        return ensure_queue_name(queue)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def pool_queue(spec: WorkerPoolSpec, namespace: str) -> str:
    """The queue of a WorkerPool (its ``queueName`` wins, as in the HyperFlow operator)."""
    return queue_for(spec.taskType, namespace, spec.queueName)


@dataclass(frozen=True)
class Routing:
    """Task type -> queue for pooled types; everything else runs in the job model."""

    namespace: str
    queues: dict[str, str]

    def queue(self, task_type: str) -> str | None:
        """The queue for ``task_type``, or ``None`` when it runs in the job model."""
        return self.queues.get(task_type)

    def model(self, task_type: str) -> str:
        return "pool" if task_type in self.queues else "job"


def parse_execution_models(data: object, *, source: str) -> list[ExecutionModel]:
    """Validate the parsed JSON of an executionModels file."""
    if not isinstance(data, list):
        raise ConfigError(
            f"expected a JSON list of {{\"name\": taskType}} entries, got {type(data).__name__}",
            source=source,
        )
    entries: list[ExecutionModel] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise ConfigError("expected an object with a 'name'", source=source, where=f"[{index}]")
        if "name" not in item:
            raise ConfigError("entry has no 'name'", source=source, where=f"[{index}]")
        entry = validate(ExecutionModel, item, source=source, where=f"[{index}]")
        if entry.name in seen:
            raise ConfigError(
                f"duplicate task type {entry.name!r} (also entry [{seen[entry.name]}])",
                source=source,
                where=f"[{index}].name",
            )
        seen[entry.name] = index
        entries.append(entry)
    return entries


def build_routing(entries: Iterable[ExecutionModel], namespace: str, *,
                  source: str = "executionModels") -> Routing:
    queues = {}
    for index, entry in enumerate(entries):
        try:
            queues[entry.name] = queue_for(entry.name, namespace, entry.queue)
        except ConfigError as exc:
            raise ConfigError(exc.message, source=source,
                              where=f"[{index}].{'queue' if entry.queue else 'name'}") from None
    return Routing(namespace, queues)


def load_routing(work_dir: str | Path, namespace: str) -> Routing:
    """Read ``workflow.config.executionModels.json`` from ``work_dir`` (absent: all jobs)."""
    path = Path(work_dir) / EXECUTION_MODELS_FILE
    if not path.exists():
        return Routing(namespace, {})
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", source=str(path)
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from None
    return build_routing(parse_execution_models(data, source=str(path)), namespace,
                         source=str(path))


def unmatched_entries(routing: Routing, task_types: Iterable[str]) -> list[str]:
    """Warnings for executionModels entries no task of the workflow has: a typo there silently
    sends the type it meant to the job model, so each names the closest task types."""
    present = sorted(set(task_types))
    out = []
    for name in sorted(set(routing.queues) - set(present)):
        close = difflib.get_close_matches(name, present, n=3, cutoff=0.6)
        hint = (f"did you mean {' or '.join(map(repr, close))}?" if close
                else f"the workflow's task types are {', '.join(present[:8]) or 'none'}"
                     f"{', ...' if len(present) > 8 else ''}")
        out.append(f"{EXECUTION_MODELS_FILE}: entry {name!r} matches no task of the workflow, "
                   f"so nothing runs in its pool; {hint}")
    return out
