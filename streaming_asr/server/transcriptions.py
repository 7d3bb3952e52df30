"""`POST /v1/audio/transcriptions`: OpenAI-compatible file transcription on the live server.

A file upload is the CLI's offline transcription (offline.transcribe_offline_async: same windows,
same stitching, same text) with its windows sent through the shared batcher as `background`
requests, so uploads only use model time that live sessions leave free. What protects the live
sessions and the process:

* the body is read as a stream (never `request.post()`, which would buffer it and is bound by
  client_max_size): a Content-Length over --max-upload-mb is refused at once, a chunked body as
  soon as it passes the limit;
* --max-uploads uploads at once (body read, decode and transcription all count); more get 429;
* decoding and window work run in the server's cpu_pool, one upload step at a time, so at most one
  of its threads is busy with uploads and live phrase rescoring keeps the other;
* the decoded audio is capped at --max-upload-s (a small compressed file can hold hours);
* a body that stalls for --idle-timeout is dropped (408), and an upload whose client has gone
  (e.g. the openai client timed out and retries) stops at its next window;
* while the server stops, new uploads get 503 and running ones stop at their next window with 503
  (the remaining model time goes to the live sessions' last finals).

Field parsing and response shapes are in openai_format.py.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..audio import StreamResampler
from ..model import ModelInput, ModelOutput
from ..offline import transcribe_offline_async
from .http import token_ok
from .openai_format import ApiError, Options, render

if TYPE_CHECKING:
    from .app import ServerContext

log = logging.getLogger("streaming_asr.server.transcriptions")

T = TypeVar("T")
MIB = 1 << 20
FORM_SLACK = 64 * 1024  # bytes a body may hold beyond the file: the other form fields and part headers
FIELD_LIMIT = 64 * 1024  # one text field (prompt included)
READ_CHUNK = 1 << 16
DECODE_FRAMES = 1 << 16  # frames decoded (and resampled) at a time: memory stays ~ the model-rate signal
MIN_FILE_RATE, MAX_FILE_RATE = 1000, 768000
RETRY_AFTER_S = 1
STOP_RETRY_AFTER_S = 5


@dataclass(frozen=True)
class Upload:
    """What the form carried."""

    opts: Options
    data: bytes
    bytes_read: int


@dataclass(frozen=True)
class Decoded:
    audio: np.ndarray  # mono float32 at the model's rate
    container: str  # soundfile's format name (WAV, FLAC, OGG, MP3, ...)


class Transcriptions:
    """The endpoint's handler (`handle`); `stopping()` tells whether the server is shutting down."""

    def __init__(self, ctx: ServerContext, stopping: Callable[[], bool]) -> None:
        self.ctx, self.settings, self.stopping = ctx, ctx.settings, stopping
        self.active = 0
        self._cpu: asyncio.Semaphore | None = None  # one upload step in cpu_pool at a time

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one upload; every failure is an OpenAI-shaped error, never a traceback."""
        try:
            return await self._handle(request)
        except ApiError as exc:
            log.info("upload refused from %s: %d %s: %s", request.remote, exc.status, exc.code, exc.message)
            return exc.response()
        except Exception:  # noqa: BLE001 - logged here, the client gets a 500 in the API's shape
            if self.stopping():
                log.info("upload from %s ended by the shutdown", request.remote)
                return _stopping_error().response()
            log.exception("upload from %s failed", request.remote)
            return ApiError(
                500,
                "the server had an error while processing the file; it has been logged",
                "internal_error",
                kind="server_error",
            ).response()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        t0, s = time.perf_counter(), self.settings
        if not token_ok(request, s.token):
            raise ApiError(
                401,
                "Incorrect API key provided: use the server's --token as the API key",
                "invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if s.max_uploads <= 0:
            raise ApiError(404, "file transcription is turned off on this server (--max-uploads 0)", "not_found")
        if self.stopping():
            raise _stopping_error()
        limit = int(s.max_upload_mb * MIB)
        if request.content_length is not None and request.content_length > limit + FORM_SLACK:
            raise _too_large(limit)
        if request.content_type != "multipart/form-data":
            raise ApiError(
                400,
                f"the body must be multipart/form-data (got {request.content_type[:60]!r}), with "
                "the audio in the 'file' field",
                "invalid_content_type",
            )
        if self.active >= s.max_uploads:
            raise ApiError(
                429,
                f"the server is transcribing {self.active} file(s), its limit; retry shortly",
                "rate_limit_exceeded",
                kind="requests",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.active += 1
        try:
            upload = await read_form(request, limit, Options(model_language=s.model_language), s.idle_timeout_s)
            decoded: Decoded = await self._offload(decode_audio, upload.data, self.ctx.info.sample_rate, s.max_upload_s)

            async def infer(item: ModelInput) -> ModelOutput:
                if self.stopping():
                    raise _stopping_error()
                if request.transport is None or request.transport.is_closing():
                    raise ApiError(408, "the client closed the connection; transcription abandoned", "client_gone")
                return await self.ctx.batcher.infer(item, background=True)

            transcript = await transcribe_offline_async(
                infer, self.ctx.info, decoded.audio, s.engine.endpoint_silence_s, self._offload, s.upload_window_s
            )
        finally:
            self.active -= 1
        log.info(
            "upload from %s: %d bytes %s, %.1f s of audio, %d segment(s), response_format=%s, took %.2f s",
            request.remote,
            upload.bytes_read,
            decoded.container,
            transcript.duration_s,
            len(transcript.finals),
            upload.opts.response_format,
            time.perf_counter() - t0,
        )
        return render(transcript, upload.opts)

    async def _offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in the server's cpu_pool, one upload step at a time."""
        if self._cpu is None:
            self._cpu = asyncio.Semaphore(1)
        async with self._cpu:
            return await asyncio.get_running_loop().run_in_executor(self.ctx.cpu_pool, fn, *args)


def _stopping_error() -> ApiError:
    return ApiError(
        503,
        "the server is shutting down; retry on another instance or once it is back",
        "shutting_down",
        kind="server_error",
        headers={"Retry-After": str(STOP_RETRY_AFTER_S)},
    )


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the file is larger than this server's limit of {limit} bytes (--max-upload-mb {limit / MIB:.3g})",
        "file_too_large",
        "file",
    )


async def read_form(request: web.Request, limit: int, opts: Options, idle_s: float) -> Upload:
    """The form's fields and file, read part by part and counted: over `limit` is 413 before it is all in.

    Each read may wait `idle_s` for data: a body that stalls is 408, so it cannot hold a slot forever.
    """
    try:
        reader = await request.multipart()
        data: bytes | None = None
        total = 0
        while (part := await read_or_timeout(reader.next(), idle_s)) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "nested multipart bodies are not supported", "invalid_request")
            if part.name == "file":
                if data is not None:
                    raise ApiError(400, "send one file per request", "invalid_request", "file")
                data, total = await read_part(part, limit, total, limit + FORM_SLACK, _too_large(limit), idle_s)
                continue
            name = part.name or ""
            value, total = await read_part(
                part,
                FIELD_LIMIT,
                total,
                limit + FORM_SLACK,
                ApiError(
                    400, f"form field {name[:40]!r} is longer than {FIELD_LIMIT} bytes", "invalid_value", name[:40]
                ),
                idle_s,
            )
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, f"form field {name[:40]!r} is not UTF-8 text", "invalid_value", name[:40]) from None
            opts.set(name, text)
    except (ValueError, ConnectionError, EOFError, HttpProcessingError) as exc:
        raise ApiError(400, f"malformed multipart/form-data body ({str(exc)[:100]})", "invalid_request") from exc
    if data is None:
        raise ApiError(
            400, "missing required parameter: 'file' (the audio to transcribe)", "missing_required_parameter", "file"
        )
    return Upload(opts, data, total)


async def read_part(
    part: BodyPartReader, part_limit: int, total: int, body_limit: int, over: ApiError, idle_s: float
) -> tuple[bytes, int]:
    """One part's bytes and the body's running count: `over` past `part_limit`, 413 past `body_limit`."""
    buf = bytearray()
    while chunk := await read_or_timeout(part.read_chunk(READ_CHUNK), idle_s):
        buf += chunk
        total += len(chunk)
        if total > body_limit:
            raise _too_large(body_limit - FORM_SLACK)
        if len(buf) > part_limit:
            raise over
    return bytes(buf), total


async def read_or_timeout(read: Awaitable[T], idle_s: float) -> T:
    try:
        return await asyncio.wait_for(read, idle_s)
    except TimeoutError:
        raise ApiError(408, f"the upload stalled: no data for {idle_s:g} s", "timeout") from None


def decode_audio(data: bytes, model_rate: int, max_s: float) -> Decoded:
    """Any format libsndfile reads (by content, not name) -> mono float32 at the model rate.

    Equal to audio.read_audio's signal (same downmix; the streaming soxr resampler gives the same
    samples as the whole-signal one), decoded in blocks so that memory stays near the output's size.
    """
    import soundfile as sf

    if not data:
        raise ApiError(400, "the uploaded file is empty", "empty_file", "file")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, container = f.samplerate, f.format
            if not MIN_FILE_RATE <= rate <= MAX_FILE_RATE:
                raise ApiError(400, f"the file's sample rate {rate} Hz is not supported", "invalid_audio", "file")
            max_frames = int(max_s * rate)
            if f.frames > max_frames:
                raise _too_long(f.frames / rate, max_s)
            resampler = StreamResampler(rate, model_rate)
            pieces, frames = [], 0
            while (block := f.read(DECODE_FRAMES, dtype="float32", always_2d=True)).shape[0]:
                frames += block.shape[0]
                if frames > max_frames:
                    raise _too_long(frames / rate, max_s)
                pieces.append(resampler.process(block.mean(axis=1).astype(np.float32)))
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, EOFError) as exc:
        raise ApiError(
            400,
            "the file could not be decoded as audio (supported: WAV, FLAC, OGG Vorbis/Opus, MP3 "
            f"and the other formats libsndfile reads): {_reason(exc)}",
            "invalid_audio",
            "file",
        ) from exc
    if not frames:
        raise ApiError(400, "the file holds no audio samples", "empty_file", "file")
    pieces.append(resampler.process(np.zeros(0, dtype=np.float32), last=True))
    audio = np.concatenate(pieces)
    return Decoded(np.nan_to_num(audio, copy=False), container)


def _reason(exc: Exception) -> str:
    """libsndfile's own words ("Format not recognised."), without the BytesIO object's repr."""
    return str(getattr(exc, "error_string", "") or exc)[:120]


def _too_long(seconds: float, max_s: float) -> ApiError:
    return ApiError(
        400,
        f"the audio is {seconds:.0f} s long; this server takes at most {max_s:g} s per file (--max-upload-s)",
        "audio_too_long",
        "file",
    )
