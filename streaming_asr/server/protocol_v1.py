"""Protocol v1 (docs/protocol.md) as a sans-I/O codec: wire messages in, Commands out; Outgoing in, text out.

Everything a client sends is checked here before it reaches the driver: size before decoding,
JSON nesting (the C decoder's recursion is bounded; RecursionError is bad JSON like any other),
`type` as a string, and every field's type. A wrong message is an `Invalid` (non-fatal error with
its documented code), never an exception.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from .. import PROTOCOL_VERSION
from ..audio import PcmFormat
from ..events import Final, Partial
from .wire import (
    Audio,
    Closed,
    Command,
    Failure,
    Finalize,
    Invalid,
    LanguageDetected,
    Outgoing,
    Ready,
    Reply,
    Start,
    Stop,
    decode_json_text,
    json_text,
)

ENGINE_OPTIONS = ("chunk_s", "left_context_s", "lookahead_s", "endpoint_silence_s", "max_segment_s")
MAX_PING_ID_CHARS = 256
MAX_LANGUAGE_CHARS = 32
TYPES = "start, finalize, stop or ping"


class ProtocolV1:
    """One connection's codec for protocol v1 (stateless apart from its size limit)."""

    name = "v1"
    idle_timeout_s: float | None = None
    errors_fatal = False

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes

    def opening(self) -> list[Command]:
        return []  # the client's `start` opens the session

    def answer(self) -> list[str]:
        return []

    def close_frame(self, code: int, reason: str) -> tuple[int, str]:
        return code, reason

    # ------------------------------------------------------------------ in
    def on_binary(self, data: bytes) -> list[Command]:
        return [Audio(data)]

    def on_text(self, data: bytes | str) -> list[Command]:
        msg = decode_json_text(data, self.max_message_bytes)
        if isinstance(msg, Invalid):
            return [msg]
        if not isinstance(msg, dict):
            return [Invalid("bad_json", "text message must be a JSON object")]
        kind = msg.get("type")
        if not isinstance(kind, str):
            return [Invalid("unknown_type", f"'type' must be a string: one of {TYPES}")]
        if kind == "start":
            return [_parse_start(msg)]
        if kind == "ping":
            return [_pong(msg)]
        if kind == "finalize":
            return [Finalize()]
        if kind == "stop":
            return [Stop()]
        return [Invalid("unknown_type", f"unknown message type {kind[:40]!r}; expected {TYPES}")]

    # ----------------------------------------------------------------- out
    def render(self, event: Outgoing) -> list[str]:
        """Events as JSON text with UTF-8 as it is (no \\u escapes: text in any script stays readable)."""
        if isinstance(event, Final) and "audio_s" in event.extra:  # the session's last final
            return [json_text({**event.to_dict(), "audio_s": event.extra["audio_s"]})]
        if isinstance(event, (Partial, Final)):
            return [json_text(event.to_dict())]
        if isinstance(event, Ready):
            return [
                json_text(
                    {"type": "ready", "protocol": PROTOCOL_VERSION, "session_id": event.session_id, **event.fields}
                )
            ]
        if isinstance(event, Closed):
            return [
                json_text(
                    {"type": "closed", "reason": event.reason, "audio_s": event.audio_s, "segments": event.segments}
                )
            ]
        if isinstance(event, LanguageDetected):
            return [json_text({"type": "language", **dataclasses.asdict(event)})]
        assert isinstance(event, Failure)
        return [json_text({"type": "error", "code": event.code, "message": event.message, "fatal": event.fatal})]

    def render_error(self, code: str, message: str) -> list[str]:
        """A fatal error before any session exists (server_full, shutting_down)."""
        return self.render(Failure(code, message, True))


def _pong(msg: dict[str, Any]) -> Command:
    if "id" not in msg:
        return Reply(json.dumps({"type": "pong"}))
    pid = msg["id"]
    number = _number(pid)
    ok = (
        (isinstance(pid, str) and len(pid) <= MAX_PING_ID_CHARS)
        or pid is None
        or (number is not None and abs(number) < 2**53)
    )
    if not ok:
        return Invalid(
            "invalid_message", f"ping 'id' must be a number or a string of at most {MAX_PING_ID_CHARS} characters"
        )
    return Reply(json_text({"type": "pong", "id": pid}))


def _parse_start(msg: dict[str, Any]) -> Command:
    """A typed Start, or Invalid naming the first wrong field (ranges are the driver's to check)."""
    if "sample_rate" not in msg:
        return Invalid("invalid_start", "'start' needs sample_rate")
    rate = msg["sample_rate"]
    if isinstance(rate, bool) or not isinstance(rate, int):
        return Invalid("invalid_start", f"sample_rate must be an integer, got {_show(rate)}")
    encoding = msg.get("encoding", "pcm_s16le")
    if not isinstance(encoding, str):
        return Invalid("unsupported_encoding", f"encoding must be a string, got {_show(encoding)}")
    channels = msg.get("channels", 1)
    if isinstance(channels, bool) or not isinstance(channels, int):
        return Invalid("unsupported_channels", f"channels must be an integer, got {_show(channels)}")
    options: dict[str, float] = {}
    for key in ENGINE_OPTIONS:
        value = msg.get(key)
        if value is None:
            continue
        number = _number(value)
        if number is None:
            return Invalid("invalid_option", f"{key} must be a finite number, got {_show(value)}")
        options[key] = number
    interim = msg.get("interim_results", True)
    if not isinstance(interim, bool):
        return Invalid("invalid_option", f"interim_results must be true or false, got {_show(interim)}")
    phrases = msg.get("phrases", [])
    if phrases is None:
        phrases = []
    if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
        return Invalid("invalid_option", f"phrases must be a list of strings, got {_show(phrases)}")
    boost = msg.get("phrase_boost")
    if boost is not None and _number(boost) is None:
        return Invalid("invalid_option", f"phrase_boost must be a finite number, got {_show(boost)}")
    language = msg.get("language")
    if language is not None and not (isinstance(language, str) and 0 < len(language) <= MAX_LANGUAGE_CHARS):
        return Invalid("invalid_option", f"language must be a language code (a short string), got {_show(language)}")
    lm = msg.get("lm", True)
    if not isinstance(lm, bool):
        return Invalid("invalid_option", f"lm must be true or false, got {_show(lm)}")
    return Start(PcmFormat(rate, encoding, channels), options, interim, tuple(phrases), _number(boost), language, lm)


def _number(value: Any) -> float | None:
    """`value` as a finite float, or None (bools, non-numbers, NaN/Infinity, ints too big for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _show(value: Any) -> str:
    """A short, safe rendering of a client value for an error message."""
    text = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__.replace("dict", "object")
    return text if len(text) <= 40 else text[:37] + "..."
