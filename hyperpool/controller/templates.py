"""User templates replacing the built-in child manifests (the HyperFlow operator's config.data).

``hyperpool controller --templates DIR`` reads ``deployment.yml``, ``prometheus-rule.yml`` and
``scaledobject.yml`` from DIR (the HyperFlow operator's ConfigMap mounted as a volume); a
missing file keeps the built-in manifest. Templates are Jinja2 with ``StrictUndefined`` (a typo
is an error, not an empty string), rendered to YAML text and parsed with ``yaml.safe_load``.
Filters ``tojson`` and ``toyaml`` render a value (e.g. ``{{ env | toyaml }}``) so templates
never quote by hand — the predecessor's ``str.format`` YAML with doubled PromQL braces was the
counter-example.

Context (see :meth:`hyperpool.controller.params.PoolParams.context`): ``pool`` (name, namespace,
uid), ``name`` (child name), ``namespace``, ``task_type``, ``queue``, ``vhost``, ``image``,
``rabbit_hostname``, ``broker_url``, ``redis_url``, ``prometheus_url``, ``min_replicas``,
``max_replicas`` (as in the spec), ``scaler_min``/``scaler_max`` (after the quota cap),
``paused``, ``resources`` (requests/limits), ``termination_grace``, ``priority_class``,
``node_selector``, ``tolerations``, ``affinity``, ``service_account`` (name or ``None``),
``image_pull_secrets`` (list of ``{name}``), ``volumes`` (pod volumes) and ``volume_mounts``
(the worker container's), both as written in the spec, ``concurrency``, ``triggers`` (extra KEDA
triggers), ``cooldown``, ``polling_interval``, ``fallback_failures``, ``fallback_replicas``,
``labels``, ``selector``, ``env`` (name/value or name/valueFrom entries), ``command``,
``record`` (the desired-replicas series), ``scaler_query``, ``rules`` (the recording rules) and
``default`` (the built-in manifest).

Whatever a template says, the controller then enforces what keeps the pool coherent: kind and
apiVersion, name, namespace, labels, ownerReferences; the Deployment's selector and pod labels
and no ``spec.replicas``; the ScaledObject's target and quota-capped replica bounds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import yaml

from hyperpool.controller import naming
from hyperpool.controller.params import PoolParams

TEMPLATE_FILES = {
    "Deployment": "deployment.yml",
    "PrometheusRule": "prometheus-rule.yml",
    "ScaledObject": "scaledobject.yml",
}
API_VERSIONS = {
    "Deployment": "apps/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "ScaledObject": "keda.sh/v1alpha1",
}


class TemplateError(Exception):
    """A template failed to render, is not YAML, or renders the wrong kind of object."""


def _toyaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()


class Templates:
    """The user's templates by kind (empty: every child uses its built-in manifest)."""

    def __init__(self, sources: Mapping[str, str] | None = None, *, origin: str = "<memory>"):
        self.origin = origin
        self.env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                                      keep_trailing_newline=True)
        self.env.filters["tojson"] = lambda v: json.dumps(v)
        self.env.filters["toyaml"] = _toyaml
        self.templates: dict[str, jinja2.Template] = {}
        for kind, text in (sources or {}).items():
            if kind not in TEMPLATE_FILES:
                raise TemplateError(f"{origin}: no child of kind {kind!r}")
            try:
                self.templates[kind] = self.env.from_string(text)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"{origin}/{TEMPLATE_FILES[kind]}:{exc.lineno}: "
                                    f"{exc.message}") from None

    @classmethod
    def from_directory(cls, directory: str | Path) -> Templates:
        path = Path(directory)
        if not path.is_dir():
            raise TemplateError(f"{path}: not a directory")
        sources = {kind: (path / file).read_text(encoding="utf-8")
                   for kind, file in TEMPLATE_FILES.items() if (path / file).is_file()}
        return cls(sources, origin=str(path))

    def render(self, kind: str, params: PoolParams, default: dict[str, Any]) -> dict[str, Any]:
        """The child of ``kind``: the user's template if any, else ``default``; enforced."""
        template = self.templates.get(kind)
        if template is None:
            return enforce(kind, params, default)
        where = f"{self.origin}/{TEMPLATE_FILES[kind]}"
        try:
            text = template.render(**params.context(), default=default)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{where}: {exc}") from None
        try:
            obj = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TemplateError(f"{where}: rendered text is not YAML: {exc}") from None
        if not isinstance(obj, dict):
            raise TemplateError(f"{where}: expected a mapping, got {type(obj).__name__}")
        if obj.get("kind") != kind or obj.get("apiVersion") != API_VERSIONS[kind]:
            raise TemplateError(f"{where}: expected {API_VERSIONS[kind]} {kind}, got "
                                f"{obj.get('apiVersion')} {obj.get('kind')}")
        return enforce(kind, params, obj)


def enforce(kind: str, params: PoolParams, obj: dict[str, Any]) -> dict[str, Any]:
    """Impose identity, ownership and the invariants the controller relies on."""
    meta = params.metadata()
    metadata = dict(obj.get("metadata") or {})
    metadata.update(name=meta["name"], namespace=meta["namespace"],
                    ownerReferences=meta["ownerReferences"])
    metadata["labels"] = {**(metadata.get("labels") or {}), **meta["labels"]}
    obj = {**obj, "metadata": metadata}
    spec = dict(obj.get("spec") or {})
    if kind == "Deployment":
        spec.pop("replicas", None)
        selector = naming.selector_labels(params.pool_name)
        spec["selector"] = {"matchLabels": selector}
        template = dict(spec.get("template") or {})
        tmeta = dict(template.get("metadata") or {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), **meta["labels"], **selector}
        spec["template"] = {**template, "metadata": tmeta}
    elif kind == "ScaledObject":
        spec["scaleTargetRef"] = {**(spec.get("scaleTargetRef") or {}),
                                  "apiVersion": "apps/v1", "kind": "Deployment",
                                  "name": params.name}
        top = min(int(spec.get("maxReplicaCount", params.scaler_max)), params.scaler_max)
        spec["maxReplicaCount"] = max(1, top)
        low = int(spec.get("minReplicaCount", params.scaler_min))
        spec["minReplicaCount"] = max(0, min(low, spec["maxReplicaCount"]))
    obj["spec"] = spec
    return obj
