"""Engine settings: window geometry and endpointing, in seconds, snapped to the model's frame grid."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any


class ConfigError(ValueError):
    """An engine option is out of range; the message names it."""


@dataclass(frozen=True)
class StreamConfig:
    """How a session cuts audio into windows and where it ends segments.

    Defaults come from bench/accuracy.py (see README, "Choosing the defaults").
    """

    chunk_s: float = 0.48  # new audio each window owns
    left_context_s: float = 5.12  # earlier audio each window also sees (limited left context)
    lookahead_s: float = 0.24  # later audio each window also sees; its frames are only provisional
    endpoint_silence_s: float = 0.8  # non-speech after speech that closes a segment (0: off)
    max_segment_s: float = 20.0  # longest segment before a forced final
    max_catchup_chunks: int = 4  # a session that fell behind may own this many chunks in one window
    feature_reuse: bool = False  # CNN runs on new frames only; cached features feed the left context
    state_reuse: bool = False  # transformer runs on new frames only, attending to cached left keys/values
    state_refresh_s: float = 0.0  # state reuse: the newest left-context frames the transformer runs again
    lookahead_reuse: bool = False  # state reuse: the previous window's look-ahead features are not recomputed

    def validate(self, limits: StreamLimits | None = None) -> StreamConfig:
        lim = limits or ENGINE_LIMITS
        _check("chunk_s", self.chunk_s, lim.min_chunk_s, lim.max_chunk_s)
        _check("left_context_s", self.left_context_s, 0.0, lim.max_left_context_s)
        _check("lookahead_s", self.lookahead_s, 0.0, lim.max_lookahead_s)
        _check("endpoint_silence_s", self.endpoint_silence_s, 0.0, 30.0)
        _check("max_segment_s", self.max_segment_s, max(1.0, self.chunk_s), lim.max_segment_s)
        _check("state_refresh_s", self.state_refresh_s, 0.0, max(0.0, self.left_context_s))
        if not 1 <= int(self.max_catchup_chunks) <= 16:
            raise ConfigError("max_catchup_chunks must be between 1 and 16")
        return self

    def with_options(self, options: Mapping[str, Any], limits: StreamLimits | None = None) -> StreamConfig:
        """Apply client/CLI overrides (only the float fields named here), then validate."""
        allowed = {f.name for f in fields(self) if f.name not in _NOT_CLIENT_OPTIONS}
        changes: dict[str, Any] = {}
        for key, value in options.items():
            if key not in allowed or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key} must be a number, got {value!r}")
            changes[key] = float(value)
        return replace(self, **changes).validate(limits)

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)

    @property
    def reuse(self) -> str:
        """Which window path runs: 'recompute', 'features' or 'state'."""
        return "state" if self.state_reuse else "features" if self.feature_reuse else "recompute"


_NOT_CLIENT_OPTIONS = ("max_catchup_chunks", "feature_reuse", "state_reuse", "state_refresh_s", "lookahead_reuse")


@dataclass(frozen=True)
class StreamLimits:
    """What a server lets clients choose (guards compute and memory per session)."""

    min_chunk_s: float = 0.1
    max_chunk_s: float = 10.0
    max_left_context_s: float = 10.0  # state reuse caches keys/values for all of it (~38 MB fp32, base)
    max_lookahead_s: float = 5.0
    max_segment_s: float = 120.0


SERVE_DEFAULT = StreamConfig(feature_reuse=True, state_reuse=True)
"""What `serve` and `transcribe --stream` run without flags; StreamConfig() itself is the exact recompute path."""

ENGINE_LIMITS = StreamLimits(
    min_chunk_s=0.02, max_chunk_s=60.0, max_left_context_s=600.0, max_lookahead_s=600.0, max_segment_s=3600.0
)
"""What the engine itself can run (offline chunking, tests); servers use tighter StreamLimits."""


def _check(name: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high):
        raise ConfigError(f"{name}={value} is outside the allowed range [{low}, {high}]")


@dataclass(frozen=True)
class FrameGeometry:
    """StreamConfig converted to whole model frames."""

    chunk: int
    left: int
    lookahead: int
    endpoint: int  # 0: off
    max_segment: int
    max_catchup: int
    refresh: int = 0

    @classmethod
    def of(cls, cfg: StreamConfig, frame_s: float) -> FrameGeometry:
        def frames(seconds: float) -> int:
            return int(round(seconds / frame_s))

        return cls(
            chunk=max(1, frames(cfg.chunk_s)),
            left=frames(cfg.left_context_s),
            lookahead=frames(cfg.lookahead_s),
            endpoint=frames(cfg.endpoint_silence_s),
            max_segment=max(1, frames(cfg.max_segment_s)),
            max_catchup=int(cfg.max_catchup_chunks),
            refresh=min(frames(cfg.state_refresh_s), frames(cfg.left_context_s)),
        )
