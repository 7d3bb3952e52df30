"""Deepgram's live query string (`/v1/listen?...`) read into a protocol-neutral Start.

Deepgram configures a live stream entirely in the URL, so a wrong parameter is an HTTP 400 at the
handshake, as Deepgram answers it. Parameters fall into three groups (docs/protocols.md lists them):
mapped (encoding, sample_rate, channels, interim_results, endpointing, utterance_end_ms, vad_events,
language, keyterm/keywords), accepted and ignored (formatting and account options that change
nothing a client relies on), and refused where ignoring them would mislead the client (diarize,
multichannel, redact, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..audio import PcmFormat
from ..model.adapters import language_list, match_language
from .wire import Start

ENCODINGS = {"linear16": "pcm_s16le", "mulaw": "mulaw", "alaw": "alaw"}
REFUSED = {  # parameter -> why ignoring it would mislead
    "diarize": "speaker diarization is not available",
    "multichannel": "channels are mixed to mono; per-channel transcripts are not available",
    "redact": "redaction is not available",
    "search": "search is not available",
    "replace": "term replacement is not available",
    "detect_language": "language detection is not available",
    "callback": "callbacks are not available; read results from the WebSocket",
    "alternatives": "only one alternative is available",
}
TRUE_ONLY_REFUSED = ("diarize", "multichannel", "detect_language")  # refused only when turned on
MIN_ENDPOINTING_S = 0.3  # CTC blank runs inside fluent speech reach ~0.2 s: shorter values would split words
MIN_UTTERANCE_END_MS = 1000  # as Deepgram


class QueryError(ValueError):
    """A query the handshake refuses (HTTP 400 with Deepgram's error body)."""


@dataclass(frozen=True)
class DeepgramOptions:
    """What the codec needs besides the Start: which extra messages the client asked for."""

    start: Start | None  # None: no encoding given, the format comes from the stream's WAV header
    interim_results: bool
    vad_events: bool
    utterance_end_ms: int | None
    endpointing_s: float | None  # None: the server's default; 0: silence endpoints off
    channels: int
    keyterms: tuple[str, ...]
    language: str | None = None  # an adapter checkpoint's language `language=` maps to (None: the default)


def parse_query(
    query: Mapping[str, str], keyterms: Sequence[str], model_language: str, languages: Sequence[str] = ()
) -> DeepgramOptions:
    """Check Deepgram's live parameters; QueryError names the first wrong one. `languages`: an
    adapter checkpoint's allowed languages, which `language` (`fr`, `fr-FR`, `fra`) maps to."""
    for name, why in REFUSED.items():
        if (
            name in query
            and not (name in TRUE_ONLY_REFUSED and _bool(query, name, False) is False)
            and not (name == "alternatives" and query[name].strip() == "1")
        ):
            raise QueryError(f"{name}: {why} on this server")
    language = query.get("language", "").strip()
    adapter = match_language(language, languages) if language and languages else None
    if language and languages and adapter is None:
        raise QueryError(f"language {language[:20]!r} is not served: languages here: {language_list(languages, 50)}")
    if language and not languages and language.split("-")[0].lower() != model_language.split("-")[0].lower():
        raise QueryError(f"language {language[:20]!r} is not served: this model transcribes {model_language!r}")
    interim = _bool(query, "interim_results", False)
    vad = _bool(query, "vad_events", False)
    channels = _int(query, "channels", 1)
    endpointing = _endpointing(query)
    utterance_end = _int(query, "utterance_end_ms", 0) if "utterance_end_ms" in query else None
    if utterance_end is not None:
        if not interim:
            raise QueryError("utterance_end_ms needs interim_results=true (as Deepgram)")
        if utterance_end < MIN_UTTERANCE_END_MS:
            raise QueryError(f"utterance_end_ms must be at least {MIN_UTTERANCE_END_MS}")
    start = None
    encoding = query.get("encoding")
    if encoding is not None:
        if encoding not in ENCODINGS:
            raise QueryError(
                f"encoding {encoding[:20]!r} is not supported: use one of {', '.join(ENCODINGS)}, "
                "or leave it out and send a WAV stream"
            )
        if "sample_rate" not in query:
            raise QueryError("sample_rate is required when encoding is given (as Deepgram)")
        options = {} if endpointing is None else {"endpoint_silence_s": endpointing}
        fmt = PcmFormat(_int(query, "sample_rate", 16000), ENCODINGS[encoding], channels)
        start = Start(fmt, options, interim or vad, tuple(keyterms), language=adapter)
    return DeepgramOptions(start, interim, vad, utterance_end, endpointing, channels, tuple(keyterms), adapter)


def keyterms_of(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """`keyterm=...` (Nova-3) and `keywords=word:boost` (Nova-2) both become phrases to bias toward."""
    terms = [v for k, v in pairs if k == "keyterm"]
    terms += [v.rsplit(":", 1)[0] if ":" in v else v for k, v in pairs if k == "keywords"]
    return [t.strip() for t in terms if t.strip()]


def start_for_wav(header: bytes, opts: DeepgramOptions) -> tuple[Start, int]:
    """The Start a WAV stream's header implies, and how many bytes of it to skip (QueryError if not WAV)."""
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise QueryError("no encoding was given and the stream is not WAV: pass encoding and sample_rate")
    pos, fmt = 12, None
    while pos + 8 <= len(header):
        kind, size = header[pos : pos + 4], int.from_bytes(header[pos + 4 : pos + 8], "little")
        body = header[pos + 8 : pos + 8 + size]
        if kind == b"fmt " and len(body) >= 16:
            tag, channels = int.from_bytes(body[0:2], "little"), int.from_bytes(body[2:4], "little")
            rate, bits = int.from_bytes(body[4:8], "little"), int.from_bytes(body[14:16], "little")
            codes = {(1, 16): "pcm_s16le", (3, 32): "pcm_f32le", (6, 8): "alaw", (7, 8): "mulaw"}
            if (tag, bits) not in codes:
                raise QueryError(f"WAV format {tag} with {bits}-bit samples is not supported")
            fmt = PcmFormat(rate, codes[tag, bits], channels)
        if kind == b"data":
            if fmt is None:
                raise QueryError("WAV data before its fmt chunk")
            options = {} if opts.endpointing_s is None else {"endpoint_silence_s": opts.endpointing_s}
            start = Start(fmt, options, opts.interim_results or opts.vad_events, opts.keyterms, language=opts.language)
            return start, pos + 8
        pos += 8 + size + (size & 1)
    raise QueryError("the WAV header must arrive in the first binary message")


def _endpointing(query: Mapping[str, str]) -> float | None:
    if "endpointing" not in query:
        return None
    value = query["endpointing"].strip().lower()
    if value == "false":
        return 0.0
    if value == "true":
        return None
    ms = _int(query, "endpointing", 0)
    return 0.0 if ms == 0 else max(MIN_ENDPOINTING_S, ms / 1000)


def _bool(query: Mapping[str, str], name: str, default: bool) -> bool:
    if name not in query:
        return default
    value = query[name].strip().lower()
    if value not in ("true", "false"):
        raise QueryError(f"{name} must be true or false, got {value[:20]!r}")
    return value == "true"


def _int(query: Mapping[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise QueryError(f"{name} must be an integer, got {value[:20]!r}") from None
    if not 0 <= number <= 10**7:
        raise QueryError(f"{name} is out of range: {number}")
    return number
