"""The learning-rate schedule: linear warm-up, then linear or cosine decay to a small floor.

The schedule is a pure function of the optimizer step and of how much of the budget is used, so a
resumed run needs only the step (and, with a time budget, the fraction already spent) to continue it.
With --max-steps the decay runs over the steps; with only --max-minutes it runs over the elapsed share of
the time budget; with both, whichever is further along (the run stops at whichever ends first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLOOR = 0.02  # the last steps train at 2 % of --lr
SHAPES = ("linear", "cosine")


def default_warmup(max_steps: int | None) -> int:
    """10 % of the steps, or 50 when the budget is time only."""
    return max(1, max_steps // 10) if max_steps else 50


@dataclass(frozen=True)
class Schedule:
    lr: float
    warmup_steps: int
    max_steps: int | None
    shape: str = "linear"
    floor: float = FLOOR

    def progress(self, step: int, time_fraction: float | None) -> float:
        """How far through the decay, 0..1: by steps after warm-up, by time, or the larger of the two."""
        parts = []
        if self.max_steps:
            parts.append((step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        if time_fraction is not None:
            parts.append(time_fraction)
        return min(1.0, max(0.0, max(parts, default=0.0)))

    def factor(self, step: int, time_fraction: float | None = None) -> float:
        """The multiple of `lr` for optimizer step `step` (0-based: the step about to be taken)."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        p = self.progress(step, time_fraction)
        decay = 1.0 - p if self.shape == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
        return warm * (self.floor + (1.0 - self.floor) * decay)

    def rate(self, step: int, time_fraction: float | None = None) -> float:
        return self.lr * self.factor(step, time_fraction)
