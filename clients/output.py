"""Transcript writers shared by the file, mic and command clients: text, JSON lines, WebVTT.

A writer receives :class:`~clients.asr_client.Final` events (already shifted to the caller's
timeline, see :func:`shift_final`) and writes them to a text stream as they arrive, flushing
each one, so a transcript survives a crash or Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

from streaming_asr.captions import format_vtt_time as _format_vtt_time
from streaming_asr.captions import vtt_cue

from .asr_client import Final, Partial, PhraseMatch, Word

Format = Literal["text", "jsonl", "vtt"]
FORMATS: tuple[Format, ...] = ("text", "jsonl", "vtt")


def format_clock(seconds: float) -> str:
    """``MM:SS.cc`` (``H:MM:SS.cc`` from one hour on) for compact transcript lines."""
    centis = max(0, round(seconds * 100))
    hours, rest = divmod(centis, 360000)
    minutes, rest = divmod(rest, 6000)
    secs, cs = divmod(rest, 100)
    clock = f"{minutes:02d}:{secs:02d}.{cs:02d}"
    return f"{hours}:{clock}" if hours else clock


format_vtt_time = _format_vtt_time  # ``HH:MM:SS.mmm``; lives in streaming_asr.captions (the server's too)


def final_line(final: Final) -> str:
    """``[00:01.20-00:03.40] TEXT``: the human-readable line of one final."""
    return f"[{format_clock(final.start)}-{format_clock(final.end)}] {final.text}"


def final_to_dict(final: Final) -> dict[str, Any]:
    """The final as a JSON-ready dict with the protocol's field names."""
    return {"type": "final", **dataclasses.asdict(final)} | {
        "words": [dataclasses.asdict(w) for w in final.words],
        "phrases": [dataclasses.asdict(p) for p in final.phrases],
    }


def partial_to_dict(partial: Partial) -> dict[str, Any]:
    return {"type": "partial", **dataclasses.asdict(partial)}


def shift_final(final: Final, segment_offset: int, time_offset: float) -> Final:
    """Move a final onto a longer timeline (segments and seconds continue across reconnects)."""
    if not segment_offset and not time_offset:
        return final
    t = time_offset
    return dataclasses.replace(
        final,
        segment=final.segment + segment_offset,
        start=final.start + t,
        end=final.end + t,
        words=tuple(Word(w.word, w.start + t, w.end + t, w.confidence) for w in final.words),
        phrases=tuple(PhraseMatch(p.phrase, p.start + t, p.end + t, p.score) for p in final.phrases),
    )


class TranscriptWriter(Protocol):
    """Something that records finals (and, optionally, partials)."""

    def write_final(self, final: Final, **extra: Any) -> None: ...

    def write_partial(self, partial: Partial, **extra: Any) -> None: ...

    def close(self) -> None: ...


class _StreamWriter:
    def __init__(self, stream: TextIO, *, close_stream: bool = False) -> None:
        self.stream = stream
        self._close_stream = close_stream

    def _emit(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def write_partial(self, partial: Partial, **extra: Any) -> None:
        """Partials are not part of a transcript; only :class:`JsonLinesWriter` may keep them."""

    def close(self) -> None:
        if self._close_stream:
            self.stream.close()
        else:
            self.stream.flush()


class TextWriter(_StreamWriter):
    """``[MM:SS.cc-MM:SS.cc] TEXT`` lines; empty finals are skipped."""

    def write_final(self, final: Final, **extra: Any) -> None:
        if final.text:
            self._emit(final_line(final) + "\n")


class JsonLinesWriter(_StreamWriter):
    """One JSON object per line: every final (empty ones too), partials when asked for."""

    def __init__(self, stream: TextIO, *, partials: bool = False, close_stream: bool = False) -> None:
        super().__init__(stream, close_stream=close_stream)
        self.partials = partials

    def write_final(self, final: Final, **extra: Any) -> None:
        self._emit(json.dumps(final_to_dict(final) | extra, ensure_ascii=False) + "\n")

    def write_partial(self, partial: Partial, **extra: Any) -> None:
        if self.partials:
            self._emit(json.dumps(partial_to_dict(partial) | extra, ensure_ascii=False) + "\n")


class VttWriter(_StreamWriter):
    """WebVTT captions: the ``WEBVTT`` header, then one numbered cue per non-empty final."""

    def __init__(self, stream: TextIO, *, close_stream: bool = False) -> None:
        super().__init__(stream, close_stream=close_stream)
        self.cues = 0
        self._emit("WEBVTT\n\n")

    def write_final(self, final: Final, **extra: Any) -> None:
        if not final.text:
            return
        self.cues += 1
        self._emit(vtt_cue(self.cues, final.start, final.end, final.text))


def infer_format(path: str | Path, default: Format = "text") -> Format:
    """Format from a file name's extension: ``.vtt``, ``.jsonl``/``.json``, else ``default``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".vtt":
        return "vtt"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    return default


def make_writer(stream: TextIO, fmt: Format, *, partials: bool = False, close_stream: bool = False) -> TranscriptWriter:
    """A writer of format ``fmt`` on an open text stream."""
    if fmt == "text":
        return TextWriter(stream, close_stream=close_stream)
    if fmt == "jsonl":
        return JsonLinesWriter(stream, partials=partials, close_stream=close_stream)
    if fmt == "vtt":
        return VttWriter(stream, close_stream=close_stream)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def open_writer(path: str | Path, fmt: Format | None = None) -> TranscriptWriter:
    """A writer on a new file; the format is inferred from the extension when not given."""
    fmt = fmt or infer_format(path)
    return make_writer(open(path, "w", encoding="utf-8"), fmt, close_stream=True)


class MultiWriter:
    """Fans events out to several writers (e.g. the terminal and an ``--output`` file)."""

    def __init__(self, *writers: TranscriptWriter) -> None:
        self.writers = list(writers)

    def write_final(self, final: Final, **extra: Any) -> None:
        for writer in self.writers:
            writer.write_final(final, **extra)

    def write_partial(self, partial: Partial, **extra: Any) -> None:
        for writer in self.writers:
            writer.write_partial(partial, **extra)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
