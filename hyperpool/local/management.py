"""The RabbitMQ management API, for queue depths (ready *and* unacknowledged).

One ``GET /api/queues/<vhost>?columns=...`` answers for every pool at once, so a tick costs one
request however many pools there are. The management plugin's numbers are statistics, refreshed
every ``collect_statistics_interval`` (5 s by default): good for unacknowledged counts and for
``hyperpool status``, too slow alone for scaling from zero (see :mod:`hyperpool.local.probe`).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from hyperpool.errors import ServiceUnavailable
from hyperpool.settings import Settings, mask_url

COLUMNS = "name,messages_ready,messages_unacknowledged,consumers"


@dataclass(frozen=True)
class QueueDepth:
    """A queue's backlog: ``depth`` = ready + unacknowledged (never ready alone)."""

    ready: int
    unacked: int
    consumers: int

    @property
    def depth(self) -> int:
        return self.ready + self.unacked


@dataclass(frozen=True)
class QueueStats(QueueDepth):
    """One queue as the management API last saw it."""

    name: str = ""


def read_endpoint(request: urllib.request.Request | str, *, timeout: float, what: str,
                  base: str, plugin: str, missing_ok: bool = False) -> bytes | None:
    """The body of one RabbitMQ HTTP endpoint (``None`` for a 404 when ``missing_ok``).

    Every failure is one :class:`ServiceUnavailable` line naming the endpoint (password
    masked) and, when it cannot be reached, the plugin that serves it.
    """
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            return resp.read()
    except urllib.error.HTTPError as exc:
        if missing_ok and exc.code == 404:
            return None
        path = urllib.parse.urlsplit(exc.url or "").path
        raise ServiceUnavailable(f"{what} at {mask_url(base)} answered {exc.code} "
                                 f"{exc.reason} for {path}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceUnavailable(
            f"cannot reach the {what} at {mask_url(base)}: {reason}; enable it with "
            f"`rabbitmq-plugins enable {plugin}` (configs/services.sh does)") from None


def vhost_of(broker_url: str) -> str:
    """The vhost of an AMQP URL as RabbitMQ names it (``amqp://h//`` and ``amqp://h`` are ``/``)."""
    path = urllib.parse.urlsplit(broker_url).path
    vhost = urllib.parse.unquote(path[1:]) if path.startswith("/") else path
    return vhost or "/"


class ManagementApi:
    """A tiny client of the endpoints hyperpool uses (stdlib only, bounded timeouts)."""

    def __init__(self, settings: Settings, *, timeout: float | None = None):
        self.base = settings.management_url.rstrip("/")
        self.vhost = vhost_of(settings.broker_url)
        self.timeout = timeout if timeout is not None else settings.connect_timeout
        token = f"{settings.management_user}:{settings.management_password}".encode()
        self._auth = "Basic " + base64.b64encode(token).decode()

    def _request(self, method: str, path: str) -> object:
        req = urllib.request.Request(f"{self.base}/api{path}", method=method)
        req.add_header("Authorization", self._auth)
        body = read_endpoint(req, timeout=self.timeout, what="RabbitMQ management API",
                             base=self.base, plugin="rabbitmq_management", missing_ok=True)
        return json.loads(body) if body else None

    def queues(self) -> dict[str, QueueStats]:
        """Every queue of the vhost, by name (one request)."""
        vhost = urllib.parse.quote(self.vhost, safe="")
        rows = self._request("GET", f"/queues/{vhost}?columns={COLUMNS}") or []
        result = {}
        for row in rows if isinstance(rows, list) else []:
            name = row.get("name")
            if not name:
                continue
            result[name] = QueueStats(
                name=name,
                ready=int(row.get("messages_ready") or 0),
                unacked=int(row.get("messages_unacknowledged") or 0),
                consumers=int(row.get("consumers") or 0),
            )
        return result

    def delete_queue(self, name: str) -> None:
        """Delete ``name`` (absent is fine); for tests and clean-up tools."""
        vhost = urllib.parse.quote(self.vhost, safe="")
        self._request("DELETE", f"/queues/{vhost}/{urllib.parse.quote(name, safe='')}")
