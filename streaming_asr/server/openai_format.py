"""OpenAI's audio transcription API shapes: form fields in, transcript bodies and errors out.

Kept apart from the HTTP handler (transcriptions.py) so the shapes can be read against OpenAI's
API reference in one place. What the official `openai` package parses: `Transcription` ({"text"})
for json, `TranscriptionVerbose` for verbose_json, the body text as-is for text/srt/vtt, and for
an error `{"error": {"message", "type", "param", "code"}}` (its `.code`, `.param`, `.type`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..captions import srt_document, vtt_document
from ..events import Final
from ..offline import Transcript
from .http import json_response

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
GRANULARITY_FIELDS = ("timestamp_granularities[]", "timestamp_granularities")
# OpenAI reports the language by its English name; codes not listed here are reported as the code
LANGUAGE_NAMES = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
    "pl": "polish",
    "ru": "russian",
    "uk": "ukrainian",
    "zh": "chinese",
    "ja": "japanese",
    "ko": "korean",
    "ar": "arabic",
    "hi": "hindi",
    "tr": "turkish",
}
TEXT_TYPE = "text/plain"  # OpenAI answers text, srt and vtt as text/plain; charset=utf-8


class ApiError(Exception):
    """An error answered in OpenAI's shape; `kind` is OpenAI's error type (invalid_request_error, ...)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None,
        param: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return json_response(self.status, body, self.headers)


def language_name(code: str) -> str:
    """`en` -> `english` (OpenAI's verbose_json names the language)."""
    base = code.split("-")[0].split("_")[0].lower()
    return LANGUAGE_NAMES.get(base, base)


@dataclass
class Options:
    """The form fields that matter; `model`, `prompt`, `temperature` and unknown fields are ignored."""

    model_language: str = "en"
    response_format: str = "json"
    granularities: tuple[str, ...] = ()

    def set(self, name: str, value: str) -> None:
        """Check and keep one form field (ApiError 400 for a value we cannot honour)."""
        value = value.strip()
        if name == "response_format":
            if value not in RESPONSE_FORMATS:
                raise ApiError(
                    400,
                    f"response_format {value[:40]!r} is not supported; use one of {', '.join(RESPONSE_FORMATS)}",
                    "invalid_value",
                    "response_format",
                )
            self.response_format = value
        elif name in GRANULARITY_FIELDS:
            if value not in GRANULARITIES:
                raise ApiError(
                    400,
                    f"timestamp_granularities {value[:40]!r} is not supported; use word and/or segment",
                    "invalid_value",
                    "timestamp_granularities",
                )
            if value not in self.granularities:
                self.granularities += (value,)
        elif name == "language":
            self._check_language(value)
        elif name == "stream" and value.lower() not in ("", "false", "0"):
            raise ApiError(
                400,
                "stream=true is not supported here: this endpoint answers when the whole file is "
                "transcribed; for live results use the WebSocket API (/v1/stream)",
                "unsupported_value",
                "stream",
            )

    def _check_language(self, value: str) -> None:
        """Accept the model's language as an ISO code (`en`, `en-US`) or name (`English`), or nothing."""
        want = self.model_language.split("-")[0].lower()
        given = value.lower()
        if given and given.replace("_", "-").split("-")[0] != want and given != language_name(want):
            raise ApiError(
                400,
                f"language {value[:40]!r} is not supported: only {language_name(want).title()} "
                f"({want!r}) is served by this model",
                "unsupported_language",
                "language",
            )


def render(transcript: Transcript, opts: Options) -> web.Response:
    """The answer to a finished transcription in the asked response_format."""
    fmt = opts.response_format
    finals = [f for f in transcript.finals if f.text]
    usage = {"type": "duration", "seconds": math.ceil(transcript.duration_s)}
    if fmt == "json":
        return json_response(200, {"text": transcript.text, "usage": usage})
    if fmt == "verbose_json":
        return json_response(200, verbose_json(transcript, finals, opts) | {"usage": usage})
    if fmt == "text":
        body = transcript.text + "\n"
    elif fmt == "srt":
        body = srt_document((f.start, f.end, f.text) for f in finals)
    else:
        body = vtt_document((f.start, f.end, f.text) for f in finals)
    return web.Response(
        status=200,
        text=body,
        content_type=TEXT_TYPE,
        charset="utf-8",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def verbose_json(transcript: Transcript, finals: list[Final], opts: Options) -> dict[str, Any]:
    """TranscriptionVerbose: segments by default or when asked, words only when asked."""
    out: dict[str, Any] = {
        "task": "transcribe",
        "language": language_name(opts.model_language),
        "duration": round(transcript.duration_s, 3),
        "text": transcript.text,
    }
    if "segment" in opts.granularities or not opts.granularities:
        out["segments"] = [segment(i, f) for i, f in enumerate(finals)]
    if "word" in opts.granularities:
        out["words"] = [
            {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for f in finals for w in f.words
        ]
    return out


def segment(index: int, final: Final) -> dict[str, Any]:
    """A TranscriptionSegment from a final.

    Whisper-only fields get neutral values: `seek` is the segment's start in centiseconds (Whisper's
    seek counts 10 ms frames), `tokens` is empty (CTC letters are not Whisper tokens), temperature
    0 (greedy), compression_ratio 1.0 and no_speech_prob 0.0 (not computed). `avg_logprob` is the
    mean natural log of the words' confidences (each the mean posterior of its letters).
    """
    logs = [math.log(max(w.confidence, 1e-10)) for w in final.words]
    return {
        "id": index,
        "seek": round(final.start * 100),
        "start": round(final.start, 3),
        "end": round(final.end, 3),
        "text": " " + final.text,
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": round(sum(logs) / len(logs), 4) if logs else 0.0,
        "compression_ratio": 1.0,
        "no_speech_prob": 0.0,
    }
