"""What a session reports: partial hypotheses and finals, as plain data with protocol-shaped dicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WordResult:
    word: str
    start: float
    end: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "word": self.word,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "confidence": round(self.confidence, 3),
        }


@dataclass(frozen=True)
class PhraseResult:
    phrase: str
    start: float
    end: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "phrase": self.phrase,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "score": round(self.score, 3),
        }


@dataclass(frozen=True)
class Partial:
    """Current hypothesis of the open segment; text[:stable] will not change any more."""

    segment: int
    text: str
    stable: int
    end: float = 0.0  # audio (seconds) the hypothesis covers: lets clients measure latency
    words: tuple[WordResult, ...] = ()  # provisional word times, for codecs that send them (not protocol v1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "partial",
            "segment": self.segment,
            "text": self.text,
            "stable": self.stable,
            "end": round(self.end, 3),
        }


@dataclass(frozen=True)
class Final:
    """A closed segment with word times (seconds of stream audio) and why it was closed."""

    segment: int
    text: str
    start: float
    end: float
    reason: str
    words: tuple[WordResult, ...] = ()
    phrases: tuple[PhraseResult, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "final",
            "segment": self.segment,
            "text": self.text,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "reason": self.reason,
            "words": [w.to_dict() for w in self.words],
        }
        if self.phrases is not None:
            out["phrases"] = [p.to_dict() for p in self.phrases]
        return out


Event = Partial | Final
