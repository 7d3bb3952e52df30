"""Reading an audio request body for the model endpoints (/v1/embed, /v1/classify, /v1/align...).

Two body shapes, both read as a stream under the upload limits of POST /v1/audio/transcriptions:

* multipart/form-data: the audio in a `file` part, plus the text fields the endpoint names;
* a raw body: WAV/FLAC/OGG/MP3 recognised by content (not by name or Content-Type), or raw PCM
  s16le when `?sample_rate=` is given (`?channels=` interleaved channels, downmixed).

A Content-Length over --max-upload-mb is 413 at once, a chunked body as soon as it passes the
limit; a stall of --idle-timeout is 408; decoding (transcriptions.decode_audio, or the PCM decoder)
runs in the server's cpu_pool and stops at --max-upload-s of audio. What is not audio is 415, other
bad input 400, a missing or wrong token 401; every error is `{"error": CODE, "message": ...}`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..audio import AudioFormatError, PcmFormat, decode_pcm, resample
from .http import error_response, token_ok
from .openai_format import ApiError
from .transcriptions import FORM_SLACK, MIB, READ_CHUNK, Decoded, decode_audio, read_or_timeout, read_part

if TYPE_CHECKING:
    from .app import ServerContext

FIELD_LIMIT = 1 << 20  # one text field (a transcript to align can be long)
PCM_FIELDS = ("sample_rate", "channels")
CODES = {"invalid_audio": (415, "not_audio"), "empty_file": (400, "empty_audio"), "file_too_large": (413, "too_large")}


class RequestError(Exception):
    """An error answered as `{"error": code, "message": message}` with `status`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.headers)

    @classmethod
    def of(cls, exc: ApiError) -> RequestError:
        """The transcription endpoint's error (OpenAI's shape) in this one's: not-audio is 415 here."""
        status, code = CODES.get(exc.code or "", (exc.status, exc.code or "invalid_request"))
        return cls(status, code, exc.message, exc.headers)


@dataclass(frozen=True)
class AudioRequest:
    """The decoded audio and the text fields of one request."""

    audio: np.ndarray  # mono float32 at the model's rate
    sample_rate: int  # the model's rate
    fields: Mapping[str, str]  # multipart text fields the endpoint asked for
    query: Mapping[str, str]
    container: str  # WAV, FLAC, OGG, ... or PCM
    bytes_read: int

    @property
    def seconds(self) -> float:
        return self.audio.size / self.sample_rate

    def param(self, name: str) -> str | None:
        """A form field, else the query parameter of that name."""
        return self.fields.get(name, self.query.get(name))


async def read_audio_request(
    request: web.Request, ctx: ServerContext, fields: Sequence[str] = (), sample_rate: int | None = None
) -> AudioRequest:
    """Check the token, read the body (multipart with `file` + `fields`, or raw) and decode it to mono
    float32 at `sample_rate` (default: the serving model's).

    Raises RequestError (401, 400, 408, 413, 415) with a message for the client.
    """
    s = ctx.settings
    if not token_ok(request, s.token):
        raise RequestError(401, "unauthorized", "missing or wrong token", {"WWW-Authenticate": "Bearer"})
    limit = int(s.max_upload_mb * MIB)
    multipart = request.content_type == "multipart/form-data"
    if request.content_length is not None and request.content_length > limit + (FORM_SLACK if multipart else 0):
        raise RequestError(413, "too_large", _too_large(limit))
    try:
        if multipart:
            data, texts, total = await _read_multipart(request, limit, (*fields, *PCM_FIELDS), s.idle_timeout_s)
        else:
            data, texts = await _read_raw(request, limit, s.idle_timeout_s), {}
            total = len(data)
    except ApiError as exc:
        raise RequestError.of(exc) from None
    query = {k: v for k, v in request.query.items()}
    rate_text = texts.get("sample_rate", query.get("sample_rate"))
    loop = asyncio.get_running_loop()
    model_rate = sample_rate or ctx.info.sample_rate
    try:
        if rate_text is not None:
            fmt = _pcm_format(rate_text, texts.get("channels", query.get("channels", "1")))
            decoded = await loop.run_in_executor(ctx.cpu_pool, decode_raw_pcm, data, fmt, model_rate, s.max_upload_s)
        else:
            decoded = await loop.run_in_executor(ctx.cpu_pool, decode_audio, data, model_rate, s.max_upload_s)
    except ApiError as exc:
        raise RequestError.of(exc) from None
    kept = {k: v for k, v in texts.items() if k in fields}
    return AudioRequest(decoded.audio, model_rate, kept, query, decoded.container, total)


def decode_raw_pcm(data: bytes, fmt: PcmFormat, model_rate: int, max_s: float) -> Decoded:
    """Raw interleaved s16le -> mono float32 at the model rate (the streaming endpoints' decoder)."""
    if not data:
        raise RequestError(400, "empty_audio", "the body holds no audio samples")
    seconds = len(data) / fmt.frame_bytes / fmt.sample_rate
    if seconds > max_s:
        raise RequestError(
            400,
            "audio_too_long",
            f"the audio is {seconds:.0f} s long; this server takes at most {max_s:g} s per request (--max-upload-s)",
        )
    try:
        audio = decode_pcm(data, fmt)
    except AudioFormatError as exc:
        raise RequestError(400, exc.code, str(exc)) from None
    return Decoded(resample(audio, fmt.sample_rate, model_rate), "PCM")


def _pcm_format(rate: str, channels: str) -> PcmFormat:
    try:
        return PcmFormat(int(rate), "pcm_s16le", int(channels)).validate()
    except ValueError as exc:  # AudioFormatError too
        if isinstance(exc, AudioFormatError):
            raise RequestError(400, exc.code, f"raw PCM: {exc}") from None
        raise RequestError(
            400, "invalid_parameter", f"sample_rate and channels must be integers, got {rate[:20]!r}, {channels[:20]!r}"
        ) from None


async def _read_raw(request: web.Request, limit: int, idle_s: float) -> bytes:
    buf = bytearray()
    try:
        while chunk := await read_or_timeout(request.content.read(READ_CHUNK), idle_s):
            buf += chunk
            if len(buf) > limit:
                raise RequestError(413, "too_large", _too_large(limit))
    except (ConnectionError, EOFError, HttpProcessingError) as exc:
        raise RequestError(400, "invalid_request", f"the body could not be read ({str(exc)[:100]})") from exc
    return bytes(buf)


async def _read_multipart(
    request: web.Request, limit: int, names: Sequence[str], idle_s: float
) -> tuple[bytes, dict[str, str], int]:
    """The `file` part and the named text fields, counted as they arrive (transcriptions.read_part)."""
    data: bytes | None = None
    texts: dict[str, str] = {}
    total = 0
    try:
        reader = await request.multipart()
        while (part := await read_or_timeout(reader.next(), idle_s)) is not None:
            if not isinstance(part, BodyPartReader):
                raise RequestError(400, "invalid_request", "nested multipart bodies are not supported")
            name = part.name or ""
            if name == "file":
                if data is not None:
                    raise RequestError(400, "invalid_request", "send one file per request")
                over = ApiError(413, _too_large(limit), "file_too_large")
                data, total = await read_part(part, limit, total, limit + FORM_SLACK, over, idle_s)
                continue
            if name not in names:
                known = ", ".join(("file", *names))
                raise RequestError(
                    400, "unknown_field", f"unknown form field {name[:40]!r}; this endpoint takes {known}"
                )
            over = ApiError(400, f"form field {name!r} is longer than {FIELD_LIMIT} bytes", "invalid_parameter")
            value, total = await read_part(part, FIELD_LIMIT, total, limit + FORM_SLACK, over, idle_s)
            try:
                texts[name] = value.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise RequestError(400, "invalid_parameter", f"form field {name!r} is not UTF-8 text") from None
    except (ValueError, ConnectionError, EOFError, HttpProcessingError) as exc:
        raise RequestError(400, "invalid_request", f"malformed multipart/form-data body ({str(exc)[:100]})") from exc
    if data is None:
        raise RequestError(400, "missing_file", "the form has no 'file' part (the audio)")
    return data, texts, total


def _too_large(limit: int) -> str:
    return f"the body is larger than this server's limit of {limit} bytes (--max-upload-mb {limit / MIB:.3g})"
