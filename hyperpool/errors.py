"""Errors that users see as one clear line instead of a traceback.

Every failure caused by the user's input or environment (a malformed file, an unreachable
broker) is raised as a :class:`HyperpoolError`; the CLI prints ``str(err)`` and exits non-zero.
Anything else is a bug in hyperpool and keeps its traceback.
"""

from __future__ import annotations


class HyperpoolError(Exception):
    """Base class of user-facing errors; ``str()`` is the whole message."""

    exit_code = 2


class ConfigError(HyperpoolError):
    """A file the user wrote (workflow, executionModels, WorkerPool, task message) is invalid.

    ``source`` names the file (or stream) and ``where`` the field path inside it, so the message
    always says what is wrong *and where*.
    """

    def __init__(self, message: str, *, source: str | None = None, where: str | None = None):
        self.message = message
        self.source = source
        self.where = where
        prefix = ""
        if source:
            prefix += f"{source}: "
        if where:
            prefix += f"{where}: "
        super().__init__(prefix + message)


class ServiceUnavailable(HyperpoolError):
    """RabbitMQ, Redis or the Kubernetes API could not be reached within the connect timeout."""

    exit_code = 3


class WorkflowFailed(HyperpoolError):
    """A workflow run ended with failed tasks (the report is in the message)."""

    exit_code = 1
