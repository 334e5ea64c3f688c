"""Shared helpers for the controller tests: the example manifest, CRD schemas, CEL, pools.

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

from tests.reference import reference_file

REPO = Path(__file__).resolve().parents[2]
OUR_CRD = REPO / "k8s" / "crds" / "workerpools.hyperflow.agh.edu.pl.yaml"
# The reference data's CRD files (tests/reference.py), by the kind each defines.
REFERENCE_CRDS = {"ScaledObject": "keda.sh_scaledobjects.yaml",
                  "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
                  "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
                  "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml"}
SEED_DOCUMENT = "003_370e92326fd781de.txt"  # the operator's design, with its example manifest
# The HyperFlow Worker Pool Operator's example WorkerPool, exactly as its design document
# writes it, so that controller tests run without the reference data;
# test_the_example_manifest_is_the_design_documents checks the copy against the document.
SEED_MANIFEST = """\
apiVersion: hyperflow.agh.edu.pl/v1
kind: WorkerPool
metadata:
  name: mproject
spec:
  taskType: mProject
  image: kjanecki/montage2-amqp:latest
  rabbitHostname: rabbitmq.default
  prometheusUrl: http://monitoring-prometheus.default:9090
  redisUrl: redis://redis:6379
  minReplicaCount: 0
  maxReplicaCount: 50
  initialResources:
    requests:
      cpu: "0.5"
      memory: "524288000"
    limits:
      cpu: "0.5"
      memory: "524288000"
"""


def seed_manifest_text() -> str:
    """The operator's example WorkerPool manifest, unchanged."""
    return SEED_MANIFEST


def design_document_manifest() -> str:
    """The example manifest as the design document in the reference data writes it."""
    text = reference_file("seeds", SEED_DOCUMENT).read_text(encoding="utf-8")
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
    """The served version's openAPIV3Schema of ``kind`` (ours, or the reference data's CRDs:
    the test skips when they are absent)."""
    path = OUR_CRD if kind == "WorkerPool" else reference_file("crds", REFERENCE_CRDS[kind])
    return load_crds(path)[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


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
    # The API server evaluates CEL rules only on values that passed the schema's type checks,
    # and after it has filled in the schema's defaults.
    return errors or cel_errors(crd_schema(kind), with_defaults(crd_schema(kind), obj))


def with_defaults(schema: dict, value: Any) -> Any:
    """``value`` with the schema's ``default``s filled in, as the API server does first."""
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        out = dict(value)
        for key, sub in schema["properties"].items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = with_defaults(sub, out[key])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(schema["items"], item) for item in value]
    return value


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
