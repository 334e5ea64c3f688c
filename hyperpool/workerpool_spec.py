"""The WorkerPool manifest, typed and validated: the HyperFlow operator's
``hyperflow.agh.edu.pl/v1`` schema and hyperpool's additions.

Fields keep their camelCase names so a manifest validates as written, and unknown fields are
rejected so a typo (``maxReplicas``) is an error rather than a silently ignored knob. The same
models check local manifests (``hyperpool pools up``) and, in the controller, applied pools.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from hyperpool.quantities import parse_quantity


def _quantity(value: Any, what: str) -> Decimal:
    try:
        return parse_quantity(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


_EXTENDED = "\x00extended"  # an alias no manifest can spell


def is_extended_resource(name: str) -> bool:
    """Resource names beyond cpu/memory a pod may request: ``nvidia.com/gpu`` and the like.

    Extended resources carry a domain (``vendor.com/thing``); ``ephemeral-storage`` and
    ``hugepages-<size>`` are the other names Kubernetes accepts. Anything else (``cpus``) is a
    typo and rejected, as an unknown field would be.
    """
    return "/" in name or name == "ephemeral-storage" or name.startswith("hugepages-")


class ResourceAmounts(BaseModel):
    """``cpu``, ``memory`` and extended resources (``nvidia.com/gpu``) as quantities.

    Kept as written and parsed on demand. Extended resources cannot be declared as fields (a
    field cannot be named ``nvidia.com/gpu``), so they are gathered into :attr:`extended`
    before validation; any other unknown name (``cpus``, ``gpu``) stays an unknown field.
    """

    model_config = ConfigDict(extra="forbid")

    cpu: str | None = None
    memory: str | None = None
    extended: dict[str, str] = Field(default_factory=dict, alias=_EXTENDED)

    @model_validator(mode="before")
    @classmethod
    def _gather_extended(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            data.pop(_EXTENDED, None)
            extended = {}
            for name in [k for k in data if isinstance(k, str) and is_extended_resource(k)]:
                value = data.pop(name)
                if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                    raise ValueError(f"{name}: expected a quantity, got {value!r}")
                _quantity(value, name)
                extended[name] = str(value)
            data[_EXTENDED] = extended
        return data

    def amounts(self) -> dict[str, str]:
        """Every resource that is set, cpu and memory first."""
        named = {"cpu": self.cpu, "memory": self.memory, **self.extended}
        return {k: v for k, v in named.items() if v is not None}

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


class LocalObjectReference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)


class PoolServiceAccount(BaseModel):
    """The worker pods' ServiceAccount: referenced, or created by the controller (``create``).

    Created only on request and never adopted: a ServiceAccount the controller did not create
    (e.g. one Terraform annotated for IRSA) is referenced as is, not rewritten or deleted with
    the pool. ``annotations`` (workload identity) therefore need ``create: true``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1)
    create: bool = False
    annotations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _coherent(self) -> PoolServiceAccount:
        if not self.create and not self.name:
            raise ValueError("name is required unless create is true")
        if self.annotations and not self.create:
            raise ValueError("annotations need create: true (the controller never modifies a "
                             "ServiceAccount it did not create)")
        return self


class BrokerCredentials(BaseModel):
    """RabbitMQ user and password from a Secret (``username`` may be given as plain text)."""

    model_config = ConfigDict(extra="forbid")

    secretName: str = Field(min_length=1)  # noqa: N815
    username: str | None = Field(default=None, min_length=1)
    usernameKey: str | None = Field(default=None, min_length=1)  # noqa: N815
    passwordKey: str = Field(default="password", min_length=1)  # noqa: N815

    @model_validator(mode="after")
    def _one_username(self) -> BrokerCredentials:
        if self.username and self.usernameKey:
            raise ValueError("give username or usernameKey, not both")
        return self


class RedisCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secretName: str = Field(min_length=1)  # noqa: N815
    passwordKey: str = Field(default="password", min_length=1)  # noqa: N815


class EnvVar(BaseModel):
    """A container env entry as Kubernetes writes it (``value`` or ``valueFrom``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    value: str | None = None
    valueFrom: dict[str, Any] | None = None  # noqa: N815


class ScaleTrigger(BaseModel):
    """An extra KEDA trigger (keda.sh/v1alpha1 ``ScaleTriggers``)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1)
    name: str | None = None
    metadata: dict[str, str]
    authenticationRef: dict[str, str] | None = None  # noqa: N815
    metricType: str | None = None  # noqa: N815
    useCachedMetrics: bool | None = None  # noqa: N815


def _check_entries(entries: list[dict[str, Any]], required: tuple[str, ...], unique: str) -> None:
    """Reject the first entry lacking a ``required`` key or repeating ``unique``.

    Kept here rather than left to the API server because a repeated merge key (a volume's
    ``name``, a mount's ``mountPath``) fails server-side apply as a vague ChildrenFailed; as
    ``[i]: problem`` the message names the entry (see :func:`describe_validation_error`).
    """
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        for key in required:
            if not entry.get(key):
                raise ValueError(f"[{i}]: {key} is required")
            if not isinstance(entry[key], str):
                raise ValueError(f"[{i}]: {key} must be a string, got {entry[key]!r}")
        if entry[unique] in seen:
            raise ValueError(f"[{i}]: {unique} {entry[unique]!r} is given twice")
        seen.add(entry[unique])


class WorkerPoolSpec(BaseModel):
    """``spec`` of a WorkerPool: the HyperFlow operator's fields, then hyperpool's additions."""

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
    # Beyond the HyperFlow operator's fields (additive, optional; k8s/README.md "WorkerPool
    # fields beyond the HyperFlow operator's").
    # Placement: the worker pods' PriorityClass (e.g. hyperflow-worker, which a scoped
    # ResourceQuota bounds), node selector, tolerations and affinity, passed through as written.
    priorityClassName: str | None = Field(default=None, min_length=1)  # noqa: N815
    nodeSelector: dict[str, str] | None = None  # noqa: N815
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None
    serviceAccount: PoolServiceAccount | None = None  # noqa: N815
    imagePullSecrets: list[LocalObjectReference] | None = None  # noqa: N815
    # Credentials by reference: the Deployment reads them with secretKeyRef; the CR never holds
    # them and the controller never reads the Secret (it needs no access to Secrets).
    brokerCredentials: BrokerCredentials | None = None  # noqa: N815
    redisCredentials: RedisCredentials | None = None  # noqa: N815
    env: list[EnvVar] | None = None
    # Shared storage: HyperFlow runs every task in one work dir (usually a PVC at /work_dir), so
    # the pods get core/v1 Volumes and the worker container VolumeMounts, passed through as
    # written (the API server validates them); only names are checked here. The controller's
    # pod has no volume of its own (no /tmp emptyDir, no token: automount is off), so a mount
    # must name one of these; a volume the controller ever adds must be reserved here.
    volumes: list[dict[str, Any]] | None = None
    volumeMounts: list[dict[str, Any]] | None = None  # noqa: N815 - after volumes (info.data)
    concurrency: int | None = Field(default=None, ge=1, le=512)
    # Look-ahead: one warm replica while the engine announces upcoming work for the queue, from
    # budget the backlog leaves over (hyperpool.scaling). Off saves that idle replica's budget.
    lookAhead: bool = True  # noqa: N815 - the CRD's field name
    terminationGracePeriodSeconds: int | None = Field(default=None, ge=0)  # noqa: N815
    triggers: list[ScaleTrigger] | None = None  # extra KEDA triggers after the queue trigger

    @field_validator("volumes")
    @classmethod
    def _volumes_named_once(cls, value: list[dict[str, Any]] | None) -> Any:
        _check_entries(value or [], ("name",), "name")
        return value

    @field_validator("volumeMounts")
    @classmethod
    def _mounts_name_volumes(cls, value: list[dict[str, Any]] | None, info: ValidationInfo) -> Any:
        _check_entries(value or [], ("name", "mountPath"), "mountPath")
        if "volumes" not in info.data:  # volumes itself is invalid: reported there
            return value
        names = {volume["name"] for volume in info.data["volumes"] or []}
        for i, mount in enumerate(value or []):
            if mount["name"] not in names:
                raise ValueError(f"[{i}]: name {mount['name']!r} is not a volume of the pod: "
                                 "add a volume of that name to spec.volumes")
        return value

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
