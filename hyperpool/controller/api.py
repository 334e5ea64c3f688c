"""The one thin wrapper around every Kubernetes API call the controller makes.

Everything above this module speaks plain dicts (manifests as you would ``kubectl apply``), so
tests replace :class:`KubeApi` with a fake and never need a cluster; the real-server tests run
exactly this code. Requests go through the ``kubernetes`` client's low-level ``ApiClient`` (auth,
TLS, kubeconfig/in-cluster config) but not its typed models: server-side apply needs the
``application/apply-patch+yaml`` content type, which the typed methods do not offer, and a
JSON body is valid YAML.

Errors surface as :class:`ApiError` with the HTTP status; ``status == 0`` means the server
was not reached. :attr:`ApiError.transient` tells retryable faults (connection, 429, 5xx,
conflicts) from permanent ones (403 forbidden, 404 kind not served, 422 invalid).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from hyperpool.controller.naming import FIELD_MANAGER

# kind -> plural, for the kinds the controller touches (no discovery round-trips needed).
PLURALS = {
    "Deployment": "deployments",
    "PrometheusRule": "prometheusrules",
    "ScaledObject": "scaledobjects",
    "ResourceQuota": "resourcequotas",
    "Job": "jobs",
    "WorkerPool": "workerpools",
    "CustomResourceDefinition": "customresourcedefinitions",
    "Namespace": "namespaces",
    "Pod": "pods",
    "ServiceAccount": "serviceaccounts",
    "Secret": "secrets",
}
REQUEST_TIMEOUT = 30.0


class ApiError(Exception):
    """A failed API request; ``str()`` names the request and the server's message."""

    def __init__(self, status: int, message: str, *, reason: str = ""):
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"HTTP {status} {reason}: {message}" if status else message)

    @property
    def transient(self) -> bool:
        return self.status in (0, 409, 429) or self.status >= 500


def resource_path(api_version: str, kind: str, namespace: str | None = None,
                  name: str | None = None, subresource: str | None = None) -> str:
    """The REST path of a collection or object (core group under ``/api``)."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(PLURALS[kind])
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class KubeApi:
    """Synchronous API access (kopf runs sync handlers in its thread pool)."""

    def __init__(self, api_client: client.ApiClient):
        self.client = api_client

    @classmethod
    def from_config(cls, kubeconfig: str | None = None) -> KubeApi:
        """In-cluster service account if available, else ``kubeconfig`` / ``$KUBECONFIG``."""
        configuration = client.Configuration()
        if kubeconfig is None:
            try:
                config.load_incluster_config(client_configuration=configuration)
                return cls(client.ApiClient(configuration))
            except config.ConfigException:
                pass
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        return cls(client.ApiClient(configuration))

    def connection_info(self) -> Any:
        """These credentials as kopf's ``ConnectionInfo`` (what kopf.login_via_client extracts
        from the kubernetes client's default configuration, from this one)."""
        import kopf

        conf = self.client.configuration
        header = (conf.get_api_key_with_prefix("BearerToken")
                  or conf.get_api_key_with_prefix("authorization"))
        scheme, _, token = (header or "").rpartition(" ")
        return kopf.ConnectionInfo(
            server=conf.host, ca_path=conf.ssl_ca_cert, insecure=not conf.verify_ssl,
            username=conf.username or None, password=conf.password or None,
            scheme=scheme or None, token=token or None, certificate_path=conf.cert_file,
            private_key_path=conf.key_file)

    def request(self, method: str, path: str, *, body: Any = None,
                query: list[tuple[str, str]] | None = None,
                content_type: str = "application/json") -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            method, url, headers, body, post = self.client.param_serialize(
                method=method, resource_path=path, query_params=query or [],
                header_params=headers, body=body, auth_settings=["BearerToken"])
            response = self.client.call_api(method, url, header_params=headers, body=body,
                                            post_params=post, _request_timeout=REQUEST_TIMEOUT)
            response.read()
        except ApiException as exc:
            raise ApiError(exc.status or 0, str(exc.reason), reason="unreachable") from None
        except OSError as exc:  # urllib3 wraps most, but not every, socket error
            raise ApiError(0, f"{method} {path}: {exc}", reason="unreachable") from None
        data = response.data or b"{}"
        if not 200 <= response.status < 300:
            try:
                message = json.loads(data).get("message", "")
            except (ValueError, AttributeError):
                message = data.decode(errors="replace")[:500]
            raise ApiError(response.status, f"{method} {path}: {message}",
                           reason=response.reason or "")
        return json.loads(data)

    # -- reads -------------------------------------------------------------------------------

    def get(self, api_version: str, kind: str, namespace: str | None,
            name: str) -> dict[str, Any] | None:
        """The object, or ``None`` when it does not exist."""
        try:
            return self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None, *,
             label_selector: str | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        result = self.request("GET", resource_path(api_version, kind, namespace), query=query)
        return list(result.get("items") or [])

    # -- writes ------------------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER,
              force: bool = True) -> dict[str, Any]:
        """Server-side apply ``obj`` (a no-op, resourceVersion unchanged, when nothing differs)."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        query = [("fieldManager", field_manager)]
        if force:
            query.append(("force", "true"))
        return self.request("PATCH", path, body=dict(obj), query=query,
                            content_type="application/apply-patch+yaml")

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                     status: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch ``status`` through the status subresource (lists are replaced whole)."""
        path = resource_path(api_version, kind, namespace, name, "status")
        return self.request("PATCH", path, body={"status": dict(status)},
                            content_type="application/merge-patch+json")

    def create(self, obj: Mapping[str, Any], *,
               field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        return self.request("POST", path, body=dict(obj), query=[("fieldManager", field_manager)])

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str, *,
               propagation: str = "Background") -> None:
        path = resource_path(api_version, kind, namespace, name)
        try:
            self.request("DELETE", path, body={"propagationPolicy": propagation})
        except ApiError as exc:
            if exc.status != 404:
                raise
