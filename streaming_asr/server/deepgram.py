"""Deepgram's live streaming API (`/v1/listen`) as a sans-I/O codec over the session driver.

Mapping of the engine's events onto Deepgram's messages (docs/protocols.md has the full table):
- a partial is `Results` with is_final=false (sent only with interim_results=true);
- a final is `Results` with is_final=true; speech_final=true when the segment ended on silence
  (the `endpointing` silence) or with the stream, false when it was cut for length or by Finalize
  (then from_finalize=true);
- `SpeechStarted` (vad_events=true) goes out before the first words of each segment;
- `UtteranceEnd` (utterance_end_ms=N) follows a silence-ended final that had words;
- `Metadata` answers CloseStream, after the last Results, then the socket closes with 1000.
Results tile the stream (`start` + `duration` of one is the next one's `start`), as Deepgram's do.
Text is lower-case like Deepgram's `transcript` without smart_format; there is no punctuation.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from ..events import Final, Partial, WordResult
from .deepgram_options import DeepgramOptions, QueryError, start_for_wav
from .wire import (
    CLOSE_IDLE,
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    Audio,
    Closed,
    Command,
    Failure,
    Finalize,
    Invalid,
    Outgoing,
    Stop,
    decode_json_text,
    json_text,
)

IDLE_TIMEOUT_S = 10.0  # Deepgram's NET-0001: no audio (or KeepAlive) for 10 s closes the stream
SPEECH_FINAL_REASONS = ("silence", "stop", "disconnect", "shutdown", "timeout", "max_session")
CLOSE_REASONS = {CLOSE_IDLE: (1011, "NET-0001"), CLOSE_POLICY: (1008, "DATA-0000"), CLOSE_INTERNAL: (1011, "NET-0000")}


class DeepgramCodec:
    """One `/v1/listen` connection: query options in, Deepgram JSON out."""

    name = "deepgram"
    idle_timeout_s: float | None = IDLE_TIMEOUT_S
    errors_fatal = False

    def __init__(
        self,
        opts: DeepgramOptions,
        model_name: str,
        max_message_bytes: int,
        request_id: str,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.opts = opts
        self.idle_timeout_s = min(IDLE_TIMEOUT_S, idle_timeout_s)
        self.max_message_bytes = max_message_bytes
        self.request_id = request_id
        self.created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.meta = {
            "request_id": request_id,
            "model_info": {"name": model_name, "version": __version__, "arch": "wav2vec2-ctc"},
            "model_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"streaming-asr:{model_name}")),
        }
        self.channel_index = [0, opts.channels]
        self.cursor = 0.0  # where the next Results' tile starts (s)
        self.speaking = False  # SpeechStarted already sent for the open segment
        self.sha = hashlib.sha256()
        self.started = opts.start is not None

    # ------------------------------------------------------------------ in
    def opening(self) -> list[Command]:
        return [self.opts.start] if self.opts.start is not None else []

    def on_binary(self, data: bytes) -> list[Command]:
        if not data:  # Deepgram's older way to say CloseStream
            return [Stop()]
        self.sha.update(data)
        if self.started:
            return [Audio(data)]
        self.started = True
        try:
            start, skip = start_for_wav(data, self.opts)
        except QueryError as exc:
            return [Invalid("unsupported_encoding", str(exc), fatal=True)]
        return [start, Audio(data[skip:])] if len(data) > skip else [start]

    def on_text(self, data: bytes | str) -> list[Command]:
        msg = decode_json_text(data, self.max_message_bytes)
        if isinstance(msg, Invalid):
            return [msg]
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "KeepAlive":
            return []  # it resets the idle timer, which counts every message
        if kind == "Finalize":
            return [Finalize()] if self.started else []
        if kind == "CloseStream":
            return [Stop(require_start=False)]
        return [Invalid("unknown_type", "expected a JSON object with type KeepAlive, Finalize or CloseStream")]

    # ----------------------------------------------------------------- out
    def render(self, event: Outgoing) -> list[str]:
        if isinstance(event, Partial):
            return self._partial(event)
        if isinstance(event, Final):
            return self._final(event)
        if isinstance(event, Closed):
            return [
                json_text(
                    {
                        "type": "Metadata",
                        "transaction_key": "deprecated",
                        "request_id": self.request_id,
                        "sha256": self.sha.hexdigest(),
                        "created": self.created,
                        "duration": round(event.audio_s, 3),
                        "channels": self.opts.channels,
                    }
                )
            ]
        if isinstance(event, Failure):
            return self.render_error(event.code, event.message)
        return []  # Ready, LanguageDetected (no Deepgram message says them) and any event added later

    def render_error(self, code: str, message: str) -> list[str]:
        return [json_text({"type": "Error", "variant": code, "description": message, "code": code, "message": message})]

    def answer(self) -> list[str]:
        return []

    def close_frame(self, code: int, reason: str) -> tuple[int, str]:
        if code in CLOSE_REASONS:
            close, prefix = CLOSE_REASONS[code]
            return close, f"{prefix} {reason}"[:120]
        return code, reason

    # ------------------------------------------------------------- helpers
    def _speech_started(self, words: tuple[WordResult, ...]) -> list[str]:
        if self.speaking or not words or not self.opts.vad_events:
            return []
        self.speaking = True
        return [
            json_text({"type": "SpeechStarted", "channel": self.channel_index, "timestamp": round(words[0].start, 3)})
        ]

    def _partial(self, event: Partial) -> list[str]:
        out = self._speech_started(event.words)
        if self.opts.interim_results:
            out.append(self._results(event.text, event.words, max(event.end, self.cursor), is_final=False))
        return out

    def _final(self, event: Final) -> list[str]:
        out = self._speech_started(event.words)
        speech_final = event.reason in SPEECH_FINAL_REASONS
        end = max(event.end, self.cursor)
        out.append(self._results(event.text, event.words, end, True, speech_final, event.reason == "finalize"))
        self.cursor = end
        self.speaking = False
        if self.opts.utterance_end_ms and event.reason == "silence" and event.words:
            out.append(
                json_text(
                    {
                        "type": "UtteranceEnd",
                        "channel": self.channel_index,
                        "last_word_end": round(event.words[-1].end, 3),
                    }
                )
            )
        return out

    def _results(
        self,
        text: str,
        words: tuple[WordResult, ...],
        end: float,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
    ) -> str:
        confidence = sum(w.confidence for w in words) / len(words) if words else 0.0
        body: dict[str, Any] = {
            "type": "Results",
            "channel_index": self.channel_index,
            "duration": round(end - self.cursor, 3),
            "start": round(self.cursor, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {"transcript": text.lower(), "confidence": round(confidence, 3), "words": [_word(w) for w in words]}
                ]
            },
            "metadata": self.meta,
        }
        return json_text(body)


def _word(w: WordResult) -> dict[str, Any]:
    word = w.word.lower()
    return {
        "word": word,
        "start": round(w.start, 3),
        "end": round(w.end, 3),
        "confidence": round(w.confidence, 3),
        "punctuated_word": word,
    }


def new_request_id() -> str:
    return str(uuid.uuid4())
