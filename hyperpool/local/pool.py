"""One local pool at run time: its workers, its recent demand, and the rules applied to it.

Kept apart from the supervisor's loop so each rule reads on its own: the cooldown window that
delays scale-down, which workers a scale-down stops, when a worker counts as still starting,
and how long a pool whose workers keep dying waits before the next try.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hyperpool.local.manifests import PoolConfig
from hyperpool.local.probe import QueueDepth
from hyperpool.local.workers import Worker

STARTUP_GRACE_SECONDS = 10.0
YOUNG_CRASH_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 30.0


@dataclass
class Pool:
    """A pool's configuration plus what the supervisor currently knows and runs."""

    config: PoolConfig
    workers: list[Worker] = field(default_factory=list)
    window: deque[tuple[float, int]] = field(default_factory=deque)
    depth: QueueDepth | None = None
    upcoming: int = 0  # look-ahead demand the engine announced (0 when the pool's switch is off)
    backlog: int = 0  # the scaling signal: ready + max(unacked, busy) of the last tick
    desired: int = 0
    target: int = 0
    restarts: int = 0
    crash_streak: int = 0
    not_before: float = 0.0
    limited: bool = False
    last_exit: str | None = None  # how the last worker that died on its own ended
    oom_kills: int = 0  # of the restarts, workers the kernel OOM-killed

    @property
    def active(self) -> list[Worker]:
        """Workers not asked to stop (the pool's replicas)."""
        return [w for w in self.workers if not w.draining]

    @property
    def busy(self) -> int:
        """Tasks seen running in the pool's workers (a worker runs up to ``concurrency``)."""
        return sum(w.running for w in self.workers)

    def held(self, now: float, cooldown: float) -> int:
        """Highest desired count within the cooldown window (the scale-down stabiliser).

        ``window`` gets one entry per tick; the newest always stays, so a cooldown of 0
        follows the demand at once.
        """
        while len(self.window) > 1 and self.window[0][0] < now - cooldown:
            self.window.popleft()
        return max(d for _, d in self.window)

    def victims(self, count: int) -> list[Worker]:
        """Whom a scale-down stops: idle first, then unknown and busy; newest first in each."""
        order = sorted(self.active, key=lambda w: (w.busy is not False, -w.started))
        return order[:count]

    def starting(self, now: float) -> int:
        """Workers started but not consuming yet: young ones beyond the queue's consumers.

        A worker that never shows up as a consumer stops counting after the grace period,
        so a miscount can slow scale-up but never stop it.
        """
        active = self.active
        young = sum(1 for w in active if w.age(now) < STARTUP_GRACE_SECONDS)
        consumers = self.depth.consumers if self.depth else 0
        settled = len(active) - young
        return max(0, young - max(0, consumers - settled))

    def crashed(self, now: float, age: float) -> float:
        """Record an unexpected exit; returns the back-off before the pool starts another.

        Workers dying young (a wrong broker URL, a broken image) back off 0.5 s, 1 s, 2 s ...
        up to 30 s; a worker that ran a while is replaced at once.
        """
        self.restarts += 1
        young = age < YOUNG_CRASH_SECONDS
        self.crash_streak = self.crash_streak + 1 if young else 0
        delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (self.crash_streak - 1)) if young else 0.0
        self.not_before = now + delay
        return delay
