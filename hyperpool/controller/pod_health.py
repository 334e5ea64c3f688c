"""Why a pool's pods cannot run, read from the kubelet's pod status (pure: pod dicts in, text out).

A Deployment whose pods crash or cannot pull their image is, to the Deployment controller, fine:
its ReplicaSet created every pod, so it reports no ``ReplicaFailure`` and the pool would stay
``Ready=True``. The kubelet says what is wrong in each pod's
``status.containerStatuses[].state`` (and ``initContainerStatuses``): a container *waiting* for
a reason in :data:`FAILING_WAITING_REASONS`, or *terminated* with a non-zero exit code in a pod
that restarts it. Those become one ``PodsFailing`` finding naming pod, container, reason and
message (or exit code), at most :data:`MAX_PODS` pods, then "and N more pods".

Deliberately *not* findings:

* pods not scheduled (``PodScheduled=False``): the quota or the nodes are full, which the
  Deployment's ``ReplicaFailure`` (``QuotaLimited``) and the cluster autoscaler deal with;
* pods being deleted (``metadata.deletionTimestamp``): a scale-down or rollout already replaces
  them, and a worker in its 600 s warm shutdown must not flip the verdict;
* finished pods (phase ``Succeeded``/``Failed``, e.g. evicted): their ReplicaSet replaces them;
* waiting reasons of a normal start (``ContainerCreating``, ``PodInitializing``) and running
  containers, even ones that crashed before: a worker that was OOM-killed once and runs again
  is healthy. A crash loop spends nearly all its time in ``CrashLoopBackOff`` (back-off up to
  5 minutes against seconds of running), so the verdict is stable in practice.

Messages carry no restart counts or back-off durations: they change on every crash, and the
status is written whenever its message changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hyperpool.controller.status import PODS_FAILING, Finding

# Kubelet waiting reasons that mean the container will not start without a change (image, spec,
# Secret, command). ErrImagePull and ImagePullBackOff alternate while the kubelet retries.
FAILING_WAITING_REASONS = frozenset({
    "ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName",
    "ImageInspectError", "CrashLoopBackOff", "CreateContainerConfigError",
    "CreateContainerError", "RunContainerError", "PreStartHookError", "PostStartHookError",
})
# Reasons about the image: the message names it, since the kubelet's detail often does not (a
# registry lookup failing says "no such host", not which image was wanted).
IMAGE_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull",
                           "InvalidImageName", "ImageInspectError"})
MAX_PODS = 3
MAX_DETAIL = 200  # characters of one kubelet message (pull errors run to several hundred)


@dataclass(frozen=True)
class ContainerProblem:
    """One container of one pod that cannot run."""

    pod: str
    container: str
    reason: str
    detail: str
    init: bool = False
    image: str = ""

    def describe(self) -> str:
        kind = "init container" if self.init else "container"
        text = f"{kind} {self.container}: {self.reason}"
        # unless the kubelet's detail already names it (compared by name:tag, as the status
        # may spell the registry out)
        if (self.image and self.reason in IMAGE_REASONS
                and self.image.rsplit("/", 1)[-1] not in self.detail):
            text += f" of image {self.image!r}"
        return f"{text} ({self.detail})" if self.detail else text


def _clip(text: Any) -> str:
    """One line, at most :data:`MAX_DETAIL` characters (termination messages may be logs)."""
    line = " ".join(str(text or "").split())
    return line if len(line) <= MAX_DETAIL else line[: MAX_DETAIL - 3].rstrip() + "..."


def _termination(terminated: Mapping[str, Any], *, last: bool) -> str:
    """``last exit code N: Reason: message`` of a previous run, ``exit code N: message`` of the
    current one (whose reason is already the headline)."""
    parts = [f"{'last ' if last else ''}exit code {terminated.get('exitCode')}"]
    keys = ("reason", "message") if last else ("message",)
    parts += [_clip(terminated[key]) for key in keys if terminated.get(key)]
    return ": ".join(parts)


def _skipped(pod: Mapping[str, Any]) -> bool:
    """Pods whose containers are not the pool's problem (module docstring)."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return True
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    return any(c.get("type") == "PodScheduled" and c.get("status") == "False"
               for c in status.get("conditions") or [])


def _container_problem(pod_name: str, cs: Mapping[str, Any], *, init: bool,
                       restarts: bool) -> ContainerProblem | None:
    state = cs.get("state") or {}
    last = (cs.get("lastState") or {}).get("terminated")
    name = str(cs.get("name") or "?")
    waiting = state.get("waiting")
    if waiting and waiting.get("reason") in FAILING_WAITING_REASONS:
        reason = waiting["reason"]
        # The back-off message ("back-off 40s restarting failed container=...") says nothing the
        # reason does not, and changes every crash; the last exit is what the user needs.
        if reason == "CrashLoopBackOff" and last:
            detail = _termination(last, last=True)
        else:
            detail = _clip(waiting.get("message")) or (_termination(last, last=True)
                                                        if last else "")
        return ContainerProblem(pod_name, name, reason, detail, init, str(cs.get("image") or ""))
    terminated = state.get("terminated")
    if terminated and restarts and int(terminated.get("exitCode") or 0) != 0:
        return ContainerProblem(pod_name, name, str(terminated.get("reason") or "Terminated"),
                                _termination(terminated, last=False), init)
    return None


def pod_problems(pod: Mapping[str, Any]) -> list[ContainerProblem]:
    """The containers of ``pod`` that cannot run (init containers first, as they run first)."""
    if _skipped(pod):
        return []
    pod_name = str((pod.get("metadata") or {}).get("name") or "?")
    status = pod.get("status") or {}
    # A non-zero exit only keeps the pod from running if the kubelet restarts the container;
    # Deployment pods always have restartPolicy Always.
    restarts = (pod.get("spec") or {}).get("restartPolicy", "Always") != "Never"
    problems = []
    for key, init in (("initContainerStatuses", True), ("containerStatuses", False)):
        for cs in status.get(key) or []:
            problem = _container_problem(pod_name, cs, init=init, restarts=restarts)
            if problem:
                problems.append(problem)
    return problems


def summarize(problems: Iterable[ContainerProblem], *, max_pods: int = MAX_PODS) -> str:
    """``pod P: container C: Reason (detail); ...; and N more pods`` (pods in name order, so the
    same failures always read the same and cause no status write)."""
    by_pod: dict[str, list[ContainerProblem]] = {}
    for problem in problems:
        by_pod.setdefault(problem.pod, []).append(problem)
    names = sorted(by_pod)
    parts = [f"pod {name}: " + ", ".join(p.describe() for p in by_pod[name])
             for name in names[:max_pods]]
    hidden = len(names) - max_pods
    if hidden > 0:
        parts.append(f"and {hidden} more pod{'s' if hidden > 1 else ''}")
    return "; ".join(parts)


def pod_findings(pods: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """One ``PodsFailing`` finding for the pool's pods, or none when they all can run."""
    problems = [p for pod in pods for p in pod_problems(pod)]
    return [Finding(PODS_FAILING, summarize(problems))] if problems else []
