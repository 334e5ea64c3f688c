"""Loading HyperFlow ``workflow.json`` files (current and legacy format) into a validated DAG.

Supported: the dataflow subset that real HyperFlow Montage/Soykb/RemoteJobs workflows use —
``processes``/``signals`` (or legacy ``tasks``/``data``), ``ins``/``outs`` as signal indices or
names, ``{{var}}`` from ``HF_VAR_var``, initial signals from ``data`` arrays or the workflow's
``ins``, ``firingLimit``, processes without an executor or with ``function: "exit"``. Every
process's task message is validated here, before any task runs (a redirect out of the work
dir, ``args`` that are not a list of arguments), with the file and field named.

Not supported, and rejected up front rather than mis-run: process types other than
``dataflow`` (``foreach``, ``choice``, ``join``, ``splitter``), control signals
(``control: true``, e.g. ``count``/``next``/``done``), sticky inputs, and nested workflows.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hyperpool.errors import ConfigError
from hyperpool.models import TaskMessage
from hyperpool.wording import plural

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SUPPORTED_TYPES = {"dataflow"}
EXIT_FUNCTIONS = {"exit"}


@dataclass
class Signal:
    name: str
    data: list[Any] | None = None


@dataclass
class Process:
    index: int
    name: str
    function: str | None
    executor: dict[str, Any] | None
    ins: list[int]
    outs: list[int]
    firing_limit: int | None = None

    @property
    def dispatches(self) -> bool:
        """False for processes that complete without running anything (``exit``, no executor)."""
        return self.executor is not None and self.function not in EXIT_FUNCTIONS


@dataclass
class Workflow:
    name: str
    source: str
    processes: list[Process]
    signals: list[Signal]
    inputs: set[int] = field(default_factory=set)


def substitute(value: Any, env: Mapping[str, str], *, source: str, where: str) -> Any:
    """Fill ``{{var}}`` from ``HF_VAR_var`` in every string of ``value``."""
    if isinstance(value, str):
        def fill(match: re.Match[str]) -> str:
            var = match.group(1)
            if f"HF_VAR_{var}" not in env:
                raise ConfigError(
                    f"unknown variable {{{{{var}}}}}: set the environment variable HF_VAR_{var}",
                    source=source, where=where,
                )
            return env[f"HF_VAR_{var}"]
        return VARIABLE.sub(fill, value) if "{{" in value else value
    if isinstance(value, list):
        return [substitute(v, env, source=source, where=f"{where}[{i}]")
                for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: substitute(v, env, source=source, where=f"{where}.{k}")
                for k, v in value.items()}
    return value


def _pick(doc: dict[str, Any], names: tuple[str, str], source: str) -> list[Any]:
    for key in names:
        if key in doc:
            value = doc[key]
            if not isinstance(value, list):
                raise ConfigError(f"must be a list, got {type(value).__name__}",
                                  source=source, where=key)
            return value
    raise ConfigError(f"no '{names[0]}' (or legacy '{names[1]}') list", source=source)


class _SignalIndex:
    def __init__(self, signals: list[Signal], source: str):
        self.signals = signals
        self.source = source
        self.by_name: dict[str, int | None] = {}
        for i, sig in enumerate(signals):
            # A name used twice can still be referenced by index; only a name lookup is ambiguous.
            self.by_name[sig.name] = None if sig.name in self.by_name else i

    def resolve(self, ref: Any, where: str) -> int:
        if isinstance(ref, bool) or not isinstance(ref, (int, str)):
            raise ConfigError(f"signal reference must be an index or a name, got {ref!r}",
                              source=self.source, where=where)
        if isinstance(ref, int):
            if 0 <= ref < len(self.signals):
                return ref
            raise ConfigError(f"signal index {ref} does not exist "
                              f"(the workflow has {plural(len(self.signals), 'signal')})",
                              source=self.source, where=where)
        if ref not in self.by_name:
            raise ConfigError(f"unknown signal {ref!r}", source=self.source, where=where)
        index = self.by_name[ref]
        if index is None:
            raise ConfigError(f"signal name {ref!r} is ambiguous (defined more than once); "
                              "refer to it by index", source=self.source, where=where)
        return index


def _signal(raw: Any, i: int, key: str, source: str) -> Signal:
    where = f"{key}[{i}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ConfigError("a signal must be an object with a non-empty 'name'",
                          source=source, where=where)
    if raw.get("control"):
        raise ConfigError(f"control signal {raw['name']!r} is not supported (dataflow DAGs only)",
                          source=source, where=where)
    data = raw.get("data")
    if data is not None and not isinstance(data, list):
        raise ConfigError("'data' must be a list", source=source, where=f"{where}.data")
    return Signal(raw["name"], data)


def _process(raw: Any, i: int, key: str, index: _SignalIndex, source: str) -> Process:
    where = f"{key}[{i}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ConfigError("a process must be an object with a non-empty 'name'",
                          source=source, where=where)
    where = f"{where} ({raw['name']})"
    ptype = raw.get("type", "dataflow")
    if ptype not in SUPPORTED_TYPES:
        raise ConfigError(f"process type {ptype!r} is not supported (supported: dataflow)",
                          source=source, where=where)
    if raw.get("sticky"):
        raise ConfigError("sticky inputs are not supported", source=source, where=where)
    limit = raw.get("firingLimit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"firingLimit must be a positive integer, got {limit!r}",
                          source=source, where=f"{where}.firingLimit")
    config = raw.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError("'config' must be an object", source=source, where=f"{where}.config")
    executor = config.get("executor")
    if executor is not None and not isinstance(executor, dict):
        raise ConfigError("'config.executor' must be an object",
                          source=source, where=f"{where}.config.executor")
    refs = {}
    for side in ("ins", "outs"):
        values = raw.get(side, [])
        if not isinstance(values, list):
            raise ConfigError(f"'{side}' must be a list", source=source, where=f"{where}.{side}")
        refs[side] = [index.resolve(r, f"{where}.{side}[{j}]") for j, r in enumerate(values)]
    function = raw.get("function")
    return Process(i, raw["name"], function if isinstance(function, str) else None, executor,
                   refs["ins"], refs["outs"], limit)


def message_fields(process: Process, signals: list[Signal]) -> dict[str, Any]:
    """What every task of ``process`` sends: its executor with its files (signal names);
    the engine adds the task's id, type and work dir."""
    fields: dict[str, Any] = dict(process.executor or {})
    fields.update(inputs=[signals[s].name for s in process.ins],
                  outputs=[signals[s].name for s in process.outs])
    return fields


def _check_message(process: Process, signals: list[Signal], source: str, where: str) -> None:
    """A task message is checked when the workflow loads, not when its task is dispatched:
    a redirect leaving the work dir must not cost the run every task before it."""
    try:
        TaskMessage.model_validate(message_fields(process, signals))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = err["loc"][0] if err["loc"] else None
        place = {"inputs": "ins", "outputs": "outs"}.get(str(field))
        place = place or ".".join(["config.executor", *map(str, err["loc"])])
        raise ConfigError(err["msg"].removeprefix("Value error, "), source=source,
                          where=f"{where}.{place}") from None


def _check_no_copies(processes: list[Process], key: str, source: str) -> None:
    """Processes may share a name (it is their task type: Montage has 73 ``mDiffFit``), but an
    exact copy of a process would run the same command twice for nothing."""
    seen: dict[str, int] = {}
    for proc in processes:
        body = json.dumps([proc.name, proc.function, proc.executor, proc.ins, proc.outs,
                           proc.firing_limit], sort_keys=True, default=str)
        if body in seen:
            raise ConfigError(f"is an exact copy of {key}[{seen[body]}]: it would run the same "
                              "command on the same signals twice; remove one",
                              source=source, where=f"{key}[{proc.index}] ({proc.name})")
        seen[body] = proc.index


def parse_workflow(doc: Any, *, source: str, env: Mapping[str, str] | None = None) -> Workflow:
    """Validate a parsed workflow document; see the module docstring for the subset."""
    if not isinstance(doc, dict):
        raise ConfigError(f"expected a JSON object, got {type(doc).__name__}", source=source)
    env = os.environ if env is None else env
    doc = substitute(doc, env, source=source, where="workflow")
    sig_key = "signals" if "signals" in doc else "data"
    proc_key = "processes" if "processes" in doc else "tasks"
    signals = [_signal(s, i, sig_key, source)
               for i, s in enumerate(_pick(doc, ("signals", "data"), source))]
    index = _SignalIndex(signals, source)
    processes = [_process(p, i, proc_key, index, source)
                 for i, p in enumerate(_pick(doc, ("processes", "tasks"), source))]
    for proc in processes:
        if proc.dispatches:
            _check_message(proc, signals, source, f"{proc_key}[{proc.index}] ({proc.name})")
    _check_no_copies(processes, proc_key, source)
    ins = doc.get("ins", [])
    if not isinstance(ins, list):
        raise ConfigError("'ins' must be a list", source=source, where="ins")
    inputs = {index.resolve(r, f"ins[{j}]") for j, r in enumerate(ins)}
    inputs |= {i for i, s in enumerate(signals) if s.data is not None}
    name = doc.get("name") if isinstance(doc.get("name"), str) else Path(source).parent.name
    return Workflow(name or "workflow", source, processes, signals, inputs)


def load_workflow(path: str | Path, env: Mapping[str, str] | None = None) -> Workflow:
    """Read and validate ``path`` (a workflow.json, or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "workflow.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                          source=str(path)) from None
    except RecursionError:
        raise ConfigError("malformed JSON: nested too deeply", source=str(path)) from None
    return parse_workflow(doc, source=str(path), env=env)
