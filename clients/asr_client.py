"""Asyncio client for the streaming-asr WebSocket protocol v1 (see docs/protocol.md).

One :class:`AsrClient` is one recognition session::

    async with AsrClient("ws://127.0.0.1:2700/v1/stream", sample_rate=16000) as client:
        await client.send_audio(pcm_bytes)
        await client.stop()
        async for event in client:
            if isinstance(event, Final):
                print(event.text)

Server messages arrive as frozen dataclasses (:class:`Partial`, :class:`Final`, ...), so callers
never touch raw JSON. Failures that end a session raise :class:`AsrError` subclasses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

Encoding = Literal["pcm_s16le", "pcm_f32le"]
_SAMPLE_BYTES = {"pcm_s16le": 2, "pcm_f32le": 4}


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Word:
    """One recognised word with its time span (seconds of session audio)."""

    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class PhraseMatch:
    """A biasing phrase from ``start.phrases`` that the server found in a segment."""

    phrase: str
    start: float
    end: float
    score: float


@dataclass(frozen=True)
class Ready:
    """The server accepted ``start``; fields are the settings the session actually got."""

    protocol: int
    session_id: str
    model: str
    sample_rate: int
    input_sample_rate: int
    encoding: str
    channels: int
    interim_results: bool
    phrases: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The whole ``ready`` message, including engine settings such as ``chunk_s``."""


@dataclass(frozen=True)
class Partial:
    """Interim hypothesis; the first ``stable`` characters of ``text`` will not change."""

    segment: int
    text: str
    stable: int
    end: float = 0.0  # seconds of session audio the hypothesis covers

    @property
    def stable_text(self) -> str:
        return self.text[: self.stable]


@dataclass(frozen=True)
class Final:
    """A closed segment; every accepted sample belongs to exactly one final."""

    segment: int
    text: str
    start: float
    end: float
    reason: str
    words: tuple[Word, ...] = ()
    phrases: tuple[PhraseMatch, ...] = ()
    audio_s: float | None = None  # on a session's last final: seconds of audio the server accepted


@dataclass(frozen=True)
class Error:
    """A server ``error``; ``fatal`` errors are followed by the server closing the connection."""

    code: str
    message: str
    fatal: bool


@dataclass(frozen=True)
class Closed:
    """Last message of a session."""

    reason: str
    audio_s: float
    segments: int


@dataclass(frozen=True)
class Pong:
    """Answer to :meth:`AsrClient.ping`."""

    id: Any = None


@dataclass(frozen=True)
class LanguageDetected:
    """``language: auto``: the language the server detected and decodes the session in; once,
    before the session's first partial or final (``score`` is None on a ``fallback``)."""

    language: str
    score: float | None
    label: str | None
    detected_from_s: float
    fallback: bool = False


Event = Ready | Partial | Final | Error | Closed | Pong | LanguageDetected


def parse_event(message: Mapping[str, Any]) -> Event | None:
    """Turn one decoded server message into an event; ``None`` for unknown types (ignored)."""
    kind = message.get("type")
    if kind == "partial":
        return Partial(
            int(message["segment"]), str(message["text"]), int(message.get("stable", 0)), float(message.get("end", 0.0))
        )
    if kind == "final":
        words = tuple(
            Word(str(w["word"]), float(w["start"]), float(w["end"]), float(w.get("confidence", 0.0)))
            for w in message.get("words") or ()
        )
        phrases = tuple(
            PhraseMatch(str(p["phrase"]), float(p["start"]), float(p["end"]), float(p.get("score", 0.0)))
            for p in message.get("phrases") or ()
        )
        return Final(
            int(message["segment"]),
            str(message["text"]),
            float(message["start"]),
            float(message["end"]),
            str(message["reason"]),
            words,
            phrases,
            float(message["audio_s"]) if "audio_s" in message else None,
        )
    if kind == "error":
        return Error(str(message.get("code", "")), str(message.get("message", "")), bool(message.get("fatal", False)))
    if kind == "closed":
        return Closed(
            str(message.get("reason", "")), float(message.get("audio_s", 0.0)), int(message.get("segments", 0))
        )
    if kind == "ready":
        return Ready(
            protocol=int(message.get("protocol", 1)),
            session_id=str(message.get("session_id", "")),
            model=str(message.get("model", "")),
            sample_rate=int(message.get("sample_rate", 0)),
            input_sample_rate=int(message.get("input_sample_rate", 0)),
            encoding=str(message.get("encoding", "")),
            channels=int(message.get("channels", 1)),
            interim_results=bool(message.get("interim_results", True)),
            phrases=tuple(message.get("phrases") or ()),
            options=dict(message),
        )
    if kind == "pong":
        return Pong(message.get("id"))
    if kind == "language":
        score, label = message.get("score"), message.get("label")
        return LanguageDetected(
            str(message.get("language", "")),
            None if score is None else float(score),
            None if label is None else str(label),
            float(message.get("detected_from_s", 0.0)),
            bool(message.get("fallback", False)),
        )
    return None


# --------------------------------------------------------------------------- errors


class AsrError(Exception):
    """Base class of every error this client raises."""


class ConnectError(AsrError):
    """The server could not be reached or refused the WebSocket handshake."""


class AuthError(ConnectError):
    """The handshake was refused with HTTP 401: missing or wrong token."""


class ServerFullError(AsrError):
    """The server already runs ``max_sessions`` sessions (error ``server_full`` / close 1013)."""


class StartRejected(AsrError):
    """The server refused ``start`` (bad sample rate, encoding, option...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ConnectionLost(AsrError):
    """The connection ended before the session's ``closed`` message."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- audio


def encode_audio(audio: bytes | bytearray | memoryview | np.ndarray, encoding: Encoding, channels: int) -> bytes:
    """Convert ``audio`` to the wire encoding.

    ``bytes`` are sent as they are (already in ``encoding``). Arrays are int16 or float
    (−1…1, clamped); 2-D arrays are ``(frames, channels)``, 1-D arrays are interleaved samples.
    """
    frame_bytes = _SAMPLE_BYTES[encoding] * channels
    if isinstance(audio, (bytes, bytearray, memoryview)):
        data = bytes(audio)
    else:
        array = np.asarray(audio)
        if array.ndim == 2 and array.shape[1] != channels:
            raise ValueError(f"audio has {array.shape[1]} channels, the session was started with {channels}")
        if array.ndim > 2:
            raise ValueError("audio must be 1-D (interleaved) or 2-D (frames, channels)")
        if array.dtype == np.int16:
            if encoding == "pcm_s16le":
                data = array.astype("<i2", copy=False).tobytes()
            else:
                data = (array.astype(np.float32) / 32768.0).astype("<f4").tobytes()
        elif np.issubdtype(array.dtype, np.floating):
            clipped = np.clip(np.nan_to_num(array, nan=0.0), -1.0, 1.0)
            if encoding == "pcm_s16le":
                data = np.round(clipped * 32767.0).astype("<i2").tobytes()
            else:
                data = clipped.astype("<f4").tobytes()
        else:
            raise TypeError(f"unsupported sample type {array.dtype}; use int16 or float")
    if len(data) % frame_bytes:
        raise ValueError(f"{len(data)} bytes is not a whole number of {frame_bytes}-byte sample frames")
    return data


# --------------------------------------------------------------------------- client


class AsrClient:
    """One recognition session over one WebSocket connection.

    ``async with`` connects, sends ``start`` and waits for ``ready`` (available as
    :attr:`ready`). Iterate over the client to receive events; iteration ends after
    :class:`Closed`, or after a fatal :class:`Error` once the server has closed the connection.
    Consume events while you send audio (e.g. in a second task): the server stops reading
    audio when its replies are not read.
    """

    def __init__(
        self,
        url: str,
        sample_rate: int = 16000,
        encoding: Encoding = "pcm_s16le",
        channels: int = 1,
        token: str | None = None,
        interim_results: bool = True,
        phrases: Sequence[str] | None = None,
        *,
        open_timeout: float = 10.0,
        ready_timeout: float = 60.0,
        **engine_options: Any,
    ) -> None:
        if encoding not in _SAMPLE_BYTES:
            raise ValueError(f"encoding must be one of {sorted(_SAMPLE_BYTES)}")
        self.url = url
        self.sample_rate = int(sample_rate)
        self.encoding: Encoding = encoding
        self.channels = int(channels)
        self.token = token
        self.interim_results = interim_results
        self.phrases = list(phrases or [])
        self.engine_options = engine_options
        self.open_timeout = open_timeout
        self.ready_timeout = ready_timeout
        self.ready: Ready | None = None
        self.closed: Closed | None = None
        self.fatal_error: Error | None = None
        self.close_code: int | None = None
        self._ws: ClientConnection | None = None

    # -- connection

    def start_message(self) -> dict[str, Any]:
        """The ``start`` message this client sends."""
        message: dict[str, Any] = {
            "type": "start",
            "sample_rate": self.sample_rate,
            "encoding": self.encoding,
            "channels": self.channels,
            "interim_results": self.interim_results,
        }
        if self.phrases:
            message["phrases"] = self.phrases
        message.update(self.engine_options)
        return message

    async def connect(self) -> Ready:
        """Open the connection, send ``start`` and wait for ``ready``."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            self._ws = await connect(self.url, additional_headers=headers, open_timeout=self.open_timeout)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401:
                detail = "token refused" if self.token else "the server needs a token"
                raise AuthError(f"{self.url}: {detail} (HTTP 401)") from None
            if status == 503:
                raise ServerFullError(f"{self.url}: server full (HTTP 503)") from None
            raise ConnectError(f"{self.url}: handshake refused with HTTP {status}") from None
        except InvalidURI as exc:
            raise ConnectError(f"bad server URL: {exc}") from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {self.url}: {exc or type(exc).__name__}") from None
        try:
            await self._send_json(self.start_message())
            async with asyncio.timeout(self.ready_timeout):
                while True:
                    event = await self._receive()
                    if isinstance(event, Ready):
                        self.ready = event
                        return event
                    if isinstance(event, Error):
                        raise self._error_exception(event)
        except TimeoutError:
            await self.aclose()
            raise ConnectError(f"{self.url}: no 'ready' within {self.ready_timeout:g} s") from None
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the connection without ``stop`` (the server then finishes with reason ``disconnect``)."""
        if self._ws is not None:
            await self._ws.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- sending

    async def send_audio(self, audio: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Send audio: bytes in the session encoding, or an int16/float array (converted, clamped)."""
        data = encode_audio(audio, self.encoding, self.channels)
        if data:
            await self._send(data)

    async def finalize(self) -> None:
        """Close the current segment now; its ``final`` has reason ``finalize``."""
        await self._send_json({"type": "finalize"})

    async def stop(self) -> None:
        """End of audio: the server sends the last ``final``, then ``closed``."""
        await self._send_json({"type": "stop"})

    async def ping(self, id: Any = None) -> None:
        """Protocol-level ping; answered by a :class:`Pong` event."""
        await self._send_json({"type": "ping", "id": id} if id is not None else {"type": "ping"})

    # -- receiving

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while self.closed is None:
            try:
                event = await self._receive()
            except ConnectionLost:
                if self.fatal_error is not None:  # the server said why before closing
                    return
                raise
            if isinstance(event, Error) and event.fatal:
                self.fatal_error = event
            if isinstance(event, Closed):
                self.closed = event
            yield event

    async def _receive(self) -> Event:
        """Next known event; raises :class:`ConnectionLost` when the connection ends."""
        ws = self._require_ws()
        while True:
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                raise self._closed_exception(exc) from None
            if isinstance(raw, bytes):
                continue  # the protocol has no server binary frames
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            event = parse_event(message) if isinstance(message, dict) else None
            if event is not None:
                return event

    # -- helpers

    def _require_ws(self) -> ClientConnection:
        if self._ws is None:
            raise AsrError("not connected: use 'async with AsrClient(...)' or await connect()")
        return self._ws

    async def _send_json(self, message: Mapping[str, Any]) -> None:
        await self._send(json.dumps(message))

    async def _send(self, data: str | bytes) -> None:
        try:
            await self._require_ws().send(data)
        except ConnectionClosed as exc:
            raise self._closed_exception(exc) from None

    def _closed_exception(self, exc: ConnectionClosed) -> AsrError:
        code = exc.rcvd.code if exc.rcvd is not None else None
        self.close_code = code
        reason = exc.rcvd.reason if exc.rcvd is not None and exc.rcvd.reason else ""
        if code == 1013:
            return ServerFullError(f"server full (close 1013) {reason}".strip())
        detail = f"close {code}" if code is not None else "no close frame"
        return ConnectionLost(f"connection lost ({detail}{': ' + reason if reason else ''})", code)

    def _error_exception(self, error: Error) -> AsrError:
        if error.code == "server_full":
            return ServerFullError(error.message or "server full")
        if error.fatal:
            return ConnectionLost(f"{error.code}: {error.message}")
        return StartRejected(error.code, error.message)


async def run_session_tasks(sending: Awaitable[None], receiving: Awaitable[None]) -> None:
    """Run a sender and a receiver; the first error cancels the other and is raised.

    The receiver finishing ends the sender too (the server closed the session).
    """
    sender, receiver = asyncio.ensure_future(sending), asyncio.ensure_future(receiving)
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if sender.done() and sender.exception() is None:
            await receiver  # all audio sent: wait for the last final and closed
        elif sender.done():
            if isinstance(sender.exception(), ConnectionLost):  # the receiver may know why
                await asyncio.wait({receiver}, timeout=1.0)
                if receiver.done():
                    receiver.result()
            raise sender.exception()  # type: ignore[misc]
        else:
            receiver.result()  # the server ended the session first; its error, if any, wins
    finally:
        for task in (sender, receiver):
            task.cancel()
        await asyncio.gather(sender, receiver, return_exceptions=True)


__all__ = [
    "AsrClient",
    "AsrError",
    "AuthError",
    "Closed",
    "ConnectError",
    "ConnectionLost",
    "Encoding",
    "Error",
    "Event",
    "Final",
    "LanguageDetected",
    "Partial",
    "PhraseMatch",
    "Pong",
    "Ready",
    "ServerFullError",
    "StartRejected",
    "Word",
    "encode_audio",
    "parse_event",
    "run_session_tasks",
]
