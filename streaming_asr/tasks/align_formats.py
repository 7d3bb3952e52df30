"""An alignment's result types and how it is written: JSON, SubRip / WebVTT (one cue per aligned
word), Praat long TextGrid.

Words the vocabulary cannot spell have no times: JSON keeps them with nulls (and lists them under
"skipped"); captions leave them out; the TextGrid leaves their time to the empty gap intervals.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..captions import srt_document, vtt_document

FORMATS = ("json", "srt", "vtt", "textgrid")


@dataclass(frozen=True)
class CharTime:
    char: str  # the vocabulary token aligned
    word_index: int  # which transcript word it spells
    start: float
    end: float
    score: float  # mean posterior of the token over its frames

    def to_json(self) -> dict[str, Any]:
        return {
            "char": self.char,
            "word_index": self.word_index,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "score": round(self.score, 3),
        }


@dataclass(frozen=True)
class WordTime:
    word: str  # as written in the transcript
    start: float | None  # None: nothing in the word is spellable with the vocabulary
    end: float | None
    score: float | None  # mean of its characters' scores

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {"word": self.word, "start": r(self.start), "end": r(self.end), "score": r(self.score)}


@dataclass(frozen=True)
class Skipped:
    """Characters of one transcript word that the vocabulary cannot spell (all of them: the word has no times)."""

    word_index: int
    word: str
    chars: str

    def to_json(self) -> dict[str, Any]:
        return {"word_index": self.word_index, "word": self.word, "chars": self.chars}


@dataclass(frozen=True)
class Alignment:
    words: tuple[WordTime, ...]  # one per transcript word, in order
    chars: tuple[CharTime, ...]
    skipped: tuple[Skipped, ...]
    duration: float  # seconds of audio aligned

    def to_json(self) -> dict[str, Any]:
        return {
            "words": [w.to_json() for w in self.words],
            "chars": [c.to_json() for c in self.chars],
            "skipped": [s.to_json() for s in self.skipped],
        }


def render(alignment: Alignment, fmt: str = "json") -> str:
    """The alignment in `fmt` (one of FORMATS), ending with a newline."""
    if fmt == "json":
        return json.dumps(alignment.to_json(), ensure_ascii=False) + "\n"
    cues = [(w.start, w.end, w.word) for w in alignment.words if w.start is not None and w.end is not None]
    if fmt == "srt":
        return srt_document(cues)
    if fmt == "vtt":
        return vtt_document(cues)
    if fmt == "textgrid":
        return textgrid(alignment)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def textgrid(alignment: Alignment) -> str:
    """Praat's long TextGrid: IntervalTiers "words" and "chars" over [0, duration], gaps as empty intervals."""
    end = max([alignment.duration] + [w.end for w in alignment.words if w.end is not None])
    words = [(w.start, w.end, w.word) for w in alignment.words if w.start is not None and w.end is not None]
    chars = [(c.start, c.end, c.char) for c in alignment.chars]
    tiers = [("words", _fill(words, end)), ("chars", _fill(chars, end))]
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0 ",
        f"xmax = {_num(end)} ",
        "tiers? <exists> ",
        f"size = {len(tiers)} ",
        "item []: ",
    ]
    for n, (name, intervals) in enumerate(tiers, 1):
        lines += [
            f"    item [{n}]:",
            '        class = "IntervalTier" ',
            f'        name = "{name}" ',
            "        xmin = 0 ",
            f"        xmax = {_num(end)} ",
            f"        intervals: size = {len(intervals)} ",
        ]
        for i, (a, b, text) in enumerate(intervals, 1):
            lines += [
                f"        intervals [{i}]:",
                f"            xmin = {a} ",
                f"            xmax = {b} ",
                f'            text = "{text.replace(chr(34), chr(34) * 2)}" ',
            ]
    return "\n".join(lines) + "\n"


def _fill(items: Sequence[tuple[float, float, str]], end: float) -> list[tuple[str, str, str]]:
    """Contiguous intervals from 0 to `end`: the items, with empty ones in the gaps (times as written,
    so each interval's xmin is exactly the previous one's xmax)."""
    out: list[tuple[str, str, str]] = []
    at = "0"
    for start, stop, text in items:
        a, b = _num(start), _num(stop)
        if float(a) > float(at):
            out.append((at, a, ""))
        elif float(a) < float(at):
            a = at  # never overlap the previous interval
        if float(b) > float(a):
            out.append((a, b, text))
            at = b
    if float(_num(end)) > float(at) or not out:
        out.append((at, _num(end), ""))
    return out


def _num(x: float) -> str:
    """Seconds as Praat writes them: no trailing zeros, at most microseconds."""
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return text or "0"
