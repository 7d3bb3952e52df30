"""Admission by capacity: what the model workers can hold in real time, and what each session costs.

A session's cost is model-seconds per second of its audio: the cost of one of its windows over
its chunk length. A window's cost is estimated from the frames the model computes for it (new
frames only with state reuse; the whole window when recomputing) plus a fixed per-window share,
scaled by a reference window timed on the real model at startup (`calibrate`). The server holds
`capacity` = model workers x `max_load` model-seconds per second; a `start` that would go over it
is refused with `server_full` before the admitted sessions fall behind real time. A measured
guard backs the estimate: while the batcher's recent p95 queue delay is over `max_queue_delay_s`,
new sessions are refused too. One session may cost at most `max_session_cost` x the default
geometry's cost (a 0.1 s chunk with long context and look-ahead costs hundreds of times more).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import FrameGeometry, StreamConfig

WINDOW_OVERHEAD_FRAMES = 8  # per-window fixed cost (launch, CNN edges, small-batch inefficiency) in frames


def window_frames(config: StreamConfig, frame_s: float) -> float:
    """Frames the model computes per window, CNN and transformer averaged, plus the fixed share."""
    g = FrameGeometry.of(config, frame_s)
    new = g.chunk + g.lookahead
    whole = g.left + new
    if config.reuse == "state":
        cnn = transformer = new + g.refresh
    elif config.reuse == "features":
        cnn, transformer = new, whole
    else:
        cnn = transformer = whole
    return WINDOW_OVERHEAD_FRAMES + (cnn + transformer) / 2


@dataclass(frozen=True)
class SessionCost:
    rate: float  # model-seconds per audio-second
    relative: float  # x the default geometry's rate
    limit: float

    @property
    def over_limit(self) -> bool:
        return self.relative > self.limit

    @property
    def message(self) -> str:
        return (
            f"this chunk/context/look-ahead geometry costs {self.relative:.1f}x the server default's "
            f"compute per audio-second; the limit is {self.limit:g}x (use a longer chunk_s or less context)"
        )


class Admission:
    """Capacity accounting for the sessions of one server (event-loop only, no locking)."""

    def __init__(
        self,
        default: StreamConfig,
        frame_s: float,
        workers: int,
        max_load: float,
        max_session_cost: float,
        max_queue_delay_s: float,
        queue_delay_p95: Callable[[], float] | None = None,
    ) -> None:
        self.default = default
        self.frame_s = frame_s
        self.capacity = max(0.0, workers * max_load)
        self.max_session_cost = max_session_cost
        self.max_queue_delay_s = max_queue_delay_s
        self.queue_delay_p95 = queue_delay_p95 or (lambda: 0.0)
        self.window_cost_s = 0.0  # measured seconds per default window (0: not calibrated, admit all)
        self._default_frames = window_frames(default, frame_s)
        self._sessions: dict[str, float] = {}
        self.refused = 0

    def calibrate(self, window_cost_s: float) -> None:
        """Seconds one default-geometry window takes on this model (timed at startup)."""
        self.window_cost_s = max(0.0, window_cost_s)

    @property
    def _default_rate(self) -> float:
        """Model-seconds per audio-second of one default-geometry session."""
        return self.window_cost_s / self.default.chunk_s

    def session_cost(self, config: StreamConfig) -> SessionCost:
        relative = (window_frames(config, self.frame_s) / self._default_frames) * (
            self.default.chunk_s / config.chunk_s
        )
        return SessionCost(self._default_rate * relative, relative, self.max_session_cost)

    @property
    def used(self) -> float:
        return sum(self._sessions.values())

    def admit(self, key: str, rate: float) -> bool:
        """Take `rate` of the capacity for session `key`, or refuse (False)."""
        if not self.capacity:  # max_load 0: admission off
            self._sessions[key] = rate
            return True
        fits = not self.window_cost_s or self.used + rate <= self.capacity + 1e-9
        if fits and self.max_queue_delay_s and self.queue_delay_p95() > self.max_queue_delay_s:
            fits = False
        if fits:
            self._sessions[key] = rate
        else:
            self.refused += 1
        return fits

    def has_room(self) -> bool:
        """Room for one more default session (readiness: a balancer should send sessions elsewhere)."""
        if not self.capacity or not self.window_cost_s:
            return True
        if self.max_queue_delay_s and self.queue_delay_p95() > self.max_queue_delay_s:
            return False
        return self.used + self._default_rate <= self.capacity + 1e-9

    def release(self, key: str) -> None:
        self._sessions.pop(key, None)

    def refusal(self) -> str:
        delay = self.queue_delay_p95()
        if self.capacity and self.max_queue_delay_s and delay > self.max_queue_delay_s:
            return f"the model is behind (p95 queue delay {delay:.2f} s); try again later"
        return (
            f"the server is at its real-time capacity ({self.used:.2f} of {self.capacity:.2f} model-seconds "
            "per second in use); try again later"
        )

    def as_dict(self) -> dict[str, Any]:
        """/health's `capacity`: model-seconds per second the server holds, and how much is taken."""
        per_session = self._default_rate
        return {
            "capacity": round(self.capacity, 4),
            "used": round(self.used, 4),
            "sessions": len(self._sessions),
            "window_cost_s": round(self.window_cost_s, 4),
            "default_session_cost": round(per_session, 4),
            "default_sessions": int((self.capacity + 1e-9) // per_session) if per_session else None,
            "queue_delay_p95_s": round(self.queue_delay_p95(), 4),
            "refused": self.refused,
        }
