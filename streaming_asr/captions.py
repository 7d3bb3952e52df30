"""Caption timestamps and cues (WebVTT and SubRip), shared by the clients' writers and the server.

Pure formatting, no I/O: the clients (clients/output.py) write cues as finals arrive, the server's
file endpoint renders a whole transcript at once; both must agree on the timestamp format.
"""

from __future__ import annotations

from collections.abc import Iterable

MIN_CUE_S = 0.01  # a cue must end after it starts; zero-length finals get this much


def format_timestamp(seconds: float, decimal: str = ".") -> str:
    """``HH:MM:SS.mmm``; SubRip wants ``,`` as the decimal mark (``HH:MM:SS,mmm``)."""
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def format_vtt_time(seconds: float) -> str:
    """``HH:MM:SS.mmm`` as WebVTT cue timings require."""
    return format_timestamp(seconds, ".")


def format_srt_time(seconds: float) -> str:
    """``HH:MM:SS,mmm`` as SubRip cue timings require."""
    return format_timestamp(seconds, ",")


def vtt_cue(index: int, start: float, end: float, text: str) -> str:
    """One numbered WebVTT cue with its blank line; ``& < >`` escaped as WebVTT cue text requires."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"{index}\n{format_vtt_time(start)} --> {format_vtt_time(max(end, start + MIN_CUE_S))}\n{text}\n\n"


def srt_cue(index: int, start: float, end: float, text: str) -> str:
    """One SubRip cue with its blank line (SubRip has no escaping)."""
    return f"{index}\n{format_srt_time(start)} --> {format_srt_time(max(end, start + MIN_CUE_S))}\n{text}\n\n"


def vtt_document(cues: Iterable[tuple[float, float, str]]) -> str:
    """A whole WebVTT file from (start, end, text) cues, numbered from 1."""
    return "WEBVTT\n\n" + "".join(vtt_cue(i, s, e, t) for i, (s, e, t) in enumerate(cues, 1))


def srt_document(cues: Iterable[tuple[float, float, str]]) -> str:
    """A whole SubRip file from (start, end, text) cues, numbered from 1."""
    return "".join(srt_cue(i, s, e, t) for i, (s, e, t) in enumerate(cues, 1))
