"""The protocol-neutral vocabulary between wire codecs and the session driver.

A codec turns client messages into `Command`s (what the client asks the session to do) and
renders `Outgoing` events (what the session says) into its wire format. Neither side knows the
other's format: protocol v1, and the compatibility protocols to come, each need only a codec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..audio import PcmFormat
from ..events import Final, Partial


class DriverError(Exception):
    """A client request the session refuses: `code` and `message` go to the client as they are."""

    def __init__(self, code: str, message: str, fatal: bool = False, close_code: int = 1008) -> None:
        super().__init__(message)
        self.code, self.message, self.fatal, self.close_code = code, message, fatal, close_code


# ------------------------------------------------------------------- client -> driver
@dataclass(frozen=True)
class Start:
    """Open the session (validated by the driver: engine limits, phrase limits, admission)."""

    fmt: PcmFormat
    options: dict[str, float] = field(default_factory=dict)  # StreamConfig client options
    interim_results: bool = True
    phrases: tuple[str, ...] = ()
    phrase_boost: float | None = None
    language: str | None = None  # an adapter checkpoint's language (None: the server's default)
    lm: bool = True  # finals through the server's --lm, when it has one (partials stay greedy)


@dataclass(frozen=True)
class Audio:
    data: bytes


@dataclass(frozen=True)
class Finalize:
    """Close the open segment now; the session goes on."""


@dataclass(frozen=True)
class Stop:
    """End of audio: last final, then the codec's closing message."""

    require_start: bool = True  # False: a session that never started just closes (Deepgram's CloseStream)


@dataclass(frozen=True)
class Reply:
    """A codec-level answer that needs no session (protocol v1's `pong`), sent as is."""

    text: str


@dataclass(frozen=True)
class Answer:
    """Reply now with the codec's `answer()`, once the driver has computed all audio received so far
    (vosk's one-reply-per-audio-message lockstep)."""


@dataclass(frozen=True)
class Invalid:
    """A message the codec could not accept: a non-fatal error with a documented code."""

    code: str
    message: str
    fatal: bool = False  # the connection cannot go on (close 1008)


Command = Start | Audio | Finalize | Stop | Reply | Answer | Invalid


def json_text(value: Any) -> str:
    """`value` as JSON with non-ASCII text as it is (real UTF-8 on the wire, not \\u escapes).

    A client's own strings (phrases, ids) may hold lone surrogates, which UTF-8 cannot encode:
    such a message falls back to ASCII escapes, which is valid JSON all the same.
    """
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return text


def decode_json_text(data: bytes | str, max_bytes: int, fatal: bool = False) -> Any:
    """A text message's JSON value, or the Invalid that says why not (every codec's first step).

    The size is checked in bytes before decoding; nesting deeper than the C decoder allows
    (RecursionError) is bad JSON like any other.
    """
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > max_bytes:
        return Invalid(
            "message_too_large", f"text message of {size} bytes is over the {max_bytes}-byte limit; rejected", fatal
        )
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return Invalid("bad_json", "text message is not valid JSON (or nested too deeply)", fatal)


# ------------------------------------------------------------------- driver -> client
@dataclass(frozen=True)
class Ready:
    """The session is open: what the client asked for and what it got."""

    session_id: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Closed:
    """The session is over after `stop`: audio accepted and finals sent."""

    reason: str
    audio_s: float
    segments: int


@dataclass(frozen=True)
class Failure:
    """An error the client should hear; fatal ones are followed by a close with `close_code`."""

    code: str
    message: str
    fatal: bool = False
    close_code: int = 1008


@dataclass(frozen=True)
class LanguageDetected:
    """`language: auto`: the language the session is decoded in, sent once before its first partial
    or final (server/language_id.py). Codecs without such a message render nothing."""

    language: str
    score: float | None  # the LID probability of `label`; None on a fallback
    label: str | None  # the LID model's label that named `language` (its top label on a fallback)
    detected_from_s: float  # seconds of audio it was detected from
    fallback: bool = False  # no LID label named a served language: the default language is used


Outgoing = Ready | Partial | Final | Closed | Failure | LanguageDetected


class Codec(Protocol):
    """One wire protocol, sans-I/O: client messages -> Commands, Outgoing events -> messages.

    The connection shell runs any codec the same way: `opening()` once the handshake is done (a
    protocol whose session is opened by the URL returns its Start here), `on_text`/`on_binary` per
    message, `render` per driver event (a codec may return nothing and keep state, or several
    messages), `answer` for an Answer command, and `close_frame` to word a close its own way.
    """

    name: str
    idle_timeout_s: float | None  # None: the server's --idle-timeout
    errors_fatal: bool  # every refused message ends the connection (protocols with no error message)

    def opening(self) -> list[Command]: ...
    def on_text(self, data: bytes | str) -> list[Command]: ...
    def on_binary(self, data: bytes) -> list[Command]: ...
    def render(self, event: Outgoing) -> list[str]: ...
    def render_error(self, code: str, message: str) -> list[str]: ...
    def answer(self) -> list[str]: ...
    def close_frame(self, code: int, reason: str) -> tuple[int, str]: ...


# WebSocket close codes (docs/protocol.md)
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_TRY_LATER = 1000, 1001, 1008, 1011, 1013
CLOSE_IDLE, CLOSE_MAX_SESSION, CLOSE_START_TIMEOUT = 4000, 4001, 4002
