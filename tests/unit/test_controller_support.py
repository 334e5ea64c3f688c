"""Shared helpers for the controller tests: the seed manifest, CRD schemas, CEL, pools.

CRD schemas are OpenAPI v3; :func:`strict_jsonschema` turns one into JSON Schema that also
rejects fields the API server would silently *prune* (a typo in a builder must fail a test, not
vanish on the server), and :func:`cel_errors` evaluates ``x-kubernetes-validations`` rules with
cel-python, as a current API server would.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
SEED = SHARED / "seeds" / "003_370e92326fd781de.txt"
SHARED_CRDS = SHARED / "crds"
OUR_CRD = REPO / "k8s" / "crds" / "workerpools.hyperflow.agh.edu.pl.yaml"


def seed_manifest_text() -> str:
    """The seed's example WorkerPool manifest, exactly as written in the seed."""
    text = SEED.read_text(encoding="utf-8")
    return text.split("Example WorkerPool manifest:\n```\n", 1)[1].split("```", 1)[0]


def seed_pool(namespace: str = "default", uid: str = "uid-1", generation: int = 1) -> dict:
    pool = yaml.safe_load(seed_manifest_text())
    pool["metadata"].update(namespace=namespace, uid=uid, generation=generation)
    return pool


def make_pool(name: str, spec: dict[str, Any], namespace: str = "ns", **meta: Any) -> dict:
    return {"apiVersion": "hyperflow.agh.edu.pl/v1", "kind": "WorkerPool",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                         "generation": 1, **meta},
            "spec": spec}


def load_crds(path: Path) -> dict[str, dict]:
    """kind -> CRD document of a (multi-document) CRD file."""
    return {doc["spec"]["names"]["kind"]: doc
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc}


@cache
def crd_schema(kind: str) -> dict:
    """The served version's openAPIV3Schema of ``kind`` (ours or the shared CRDs)."""
    files = [OUR_CRD, *sorted(SHARED_CRDS.glob("*.yaml"))]
    for path in files:
        crds = load_crds(path)
        if kind in crds:
            return crds[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    raise KeyError(kind)


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def strict_jsonschema(schema: dict) -> dict:
    strict = _strict(copy.deepcopy(schema))
    # metadata is validated by the API server itself, not by the CRD schema.
    strict.setdefault("properties", {})["metadata"] = {"type": "object"}
    return strict


def schema_errors(kind: str, obj: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(strict_jsonschema(crd_schema(kind)))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(obj)]
    return errors + cel_errors(crd_schema(kind), obj)


def _walk(schema: dict, value: Any, path: str) -> Iterator[tuple[dict, Any, str]]:
    yield schema, value, path
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                yield from _walk(sub, value[key], f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from _walk(schema["items"], item, f"{path}[{i}]")


def cel_errors(schema: dict, obj: dict) -> list[str]:
    """Messages of the ``x-kubernetes-validations`` rules ``obj`` breaks."""
    env = celpy.Environment()
    errors = []
    for node, value, path in _walk(schema, obj, "self"):
        for rule in node.get("x-kubernetes-validations") or []:
            program = env.program(env.compile(rule["rule"]))
            result = program.evaluate({"self": celpy.json_to_cel(value)})
            if result is not True and not (isinstance(result, celpy.celtypes.BoolType)
                                           and bool(result)):
                errors.append(f"{path}: {rule.get('message', rule['rule'])}")
    return errors
