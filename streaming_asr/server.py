"""The asyncio WebSocket server: a thin shell around StreamingSession, the Batcher and protocol v1.

One connection = one `Connection` object (its own AudioInput and StreamingSession; nothing per
connection lives on shared objects). Two tasks per connection: the reader (parses messages, pushes
audio, applies backpressure) and the pump (hands ready windows to the batcher, sends events).
Plain HTTP on the same port serves the captioning page, /health and /v1/auth.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import mimetypes
import os
import secrets
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import PROTOCOL_VERSION, __version__
from .audio import AudioFormatError, AudioInput, PcmFormat
from .batcher import Batcher, ForwardFn
from .config import SERVE_DEFAULT, ConfigError, StreamConfig, StreamLimits
from .events import Final, Partial
from .model import CtcModel, ModelInfo
from .model.runtime import WorkerPlan, plan_workers
from .session import StreamingSession

log = logging.getLogger("streaming_asr.server")

WEB_DIR = Path(__file__).parent / "web"
STREAM_PATH = "/v1/stream"
MAX_NONFATAL_ERRORS = 50
CSP = ("default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; img-src 'self' data:; "
       "style-src 'self'; script-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'")

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_TRY_LATER = 1000, 1001, 1008, 1011, 1013
CLOSE_IDLE, CLOSE_MAX_SESSION = 4000, 4001


@dataclass(frozen=True)
class ServerSettings:
    """Everything `serve` can be told; defaults are what a single-box deployment wants."""

    host: str = "127.0.0.1"
    port: int = 2700
    token: str | None = None
    max_sessions: int = 32
    max_message_bytes: int = 1 << 20
    idle_timeout_s: float = 60.0
    max_session_s: float = 4 * 3600.0
    max_backlog_s: float = 10.0  # unprocessed audio per session before the reader stops reading
    max_batch: int = 8
    max_wait_ms: float = 5.0
    model_workers: int = 1  # batches computed at once, each on its own thread
    model_threads: int | None = None  # torch threads per worker (None: leave torch's setting)
    engine: StreamConfig = SERVE_DEFAULT
    limits: StreamLimits = field(default_factory=StreamLimits)
    phrase_boost: float | None = None  # None: the phrase module's default


class AsrServer:
    """Owns the model, the batcher and the set of live connections."""

    def __init__(self, forward: ForwardFn, info: ModelInfo, settings: ServerSettings) -> None:
        self.forward = forward
        self.info = info
        self.settings = settings
        init = None
        if settings.model_threads:
            from functools import partial

            from .model.runtime import set_torch_threads

            init = partial(set_torch_threads, settings.model_threads)
        self.batcher = Batcher(forward, settings.max_batch, settings.max_wait_ms / 1000, settings.model_workers, init)
        self.precision = str(getattr(forward, "precision", "fp32"))
        self.connections: set[Connection] = set()
        self.started = time.monotonic()
        self._server: Server | None = None
        self._stopping = False

    # ----------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.batcher.start()
        self._server = await serve(
            self._handle, self.settings.host, self.settings.port,
            process_request=self._process_request,
            max_size=4 * self.settings.max_message_bytes,
            max_queue=4,  # frames buffered per connection before TCP backpressure
            ping_interval=20, ping_timeout=20, close_timeout=5,
            server_header=f"streaming-asr/{__version__}",
        )
        log.info("listening on ws://%s:%d%s model=%s", self.settings.host, self.port, STREAM_PATH, self.info.name)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, timeout: float = 30.0) -> None:
        """Graceful: stop accepting, send finals to open sessions, close them with 1001."""
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close(close_connections=False)
        conns = list(self.connections)
        if conns:
            log.info("shutdown: finishing %d open session(s)", len(conns))
            await asyncio.wait([asyncio.ensure_future(c.shutdown()) for c in conns], timeout=timeout)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.batcher.close()
        log.info("server stopped")

    def status(self) -> dict[str, Any]:
        return {"status": "stopping" if self._stopping else "ok", "protocol": PROTOCOL_VERSION,
                "version": __version__, "model": self.info.name, "sessions": len(self.connections),
                "max_sessions": self.settings.max_sessions, "queue_depth": self.batcher.queue_depth,
                **self.compute_settings(), "model_workers": self.settings.model_workers,
                "uptime_s": round(time.monotonic() - self.started, 1), "batching": self.batcher.stats.as_dict()}

    def compute_settings(self) -> dict[str, Any]:
        """How the model runs: reported in /health and in every `ready`."""
        reuse = self.settings.engine.reuse
        return {"precision": self.precision, "feature_reuse": reuse != "recompute", "state_reuse": reuse == "state"}

    # ---------------------------------------------------------------- HTTP
    def _token_ok(self, request: Request) -> bool:
        expected = self.settings.token
        if not expected:
            return True
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if given is None:
            given = parse_qs(urlsplit(request.path).query).get("token", [None])[0]
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        if upgrade:
            if path != STREAM_PATH:
                return _http(404, {"error": "not_found", "message": f"WebSocket endpoint is {STREAM_PATH}"})
            if not self._token_ok(request):
                log.info("handshake refused: bad or missing token from %s", connection.remote_address)
                return _http(401, {"error": "unauthorized", "message": "missing or wrong token"},
                             {"WWW-Authenticate": "Bearer"})
            return None
        if path == "/health":
            return _http(200, self.status())
        if path == "/v1/auth":
            ok = self._token_ok(request)
            return _http(200 if ok else 401, {"ok": ok, "token_required": bool(self.settings.token)})
        return _static(path)

    # ------------------------------------------------------------ sessions
    async def _handle(self, ws: ServerConnection) -> None:
        if self._stopping:
            await _send_json(ws, {"type": "error", "code": "shutting_down", "message": "server is stopping",
                                  "fatal": True})
            await ws.close(CLOSE_GOING_AWAY, "shutting down")
            return
        if len(self.connections) >= self.settings.max_sessions:
            log.warning("session refused: server full (%d sessions)", len(self.connections))
            await _send_json(ws, {"type": "error", "code": "server_full", "fatal": True,
                                  "message": f"server is at its limit of {self.settings.max_sessions} "
                                             "sessions; try again later"})
            await ws.close(CLOSE_TRY_LATER, "server full")
            return
        conn = Connection(self, ws)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)


class Connection:
    """One client session: protocol state machine over a StreamingSession."""

    def __init__(self, server: AsrServer, ws: ServerConnection) -> None:
        self.server = server
        self.ws = ws
        self.id = secrets.token_hex(8)
        self.settings = server.settings
        self.audio: AudioInput | None = None
        self.session: StreamingSession | None = None
        self.errors = 0
        self.finals = 0
        self.ended: str | None = None  # why the session ended (stop, disconnect, timeout, ...)
        self._work = asyncio.Event()  # reader -> pump: something to compute or flush
        self._progress = asyncio.Event()  # pump -> reader: backlog shrank
        self._done = asyncio.Event()  # pump finished the closing final
        self._pump: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None

    def _log(self, level: int, event: str, **kv: Any) -> None:
        fields = " ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in kv.items())
        log.log(level, "session=%s event=%s %s", self.id, event, fields)

    async def run(self) -> None:
        self._log(logging.INFO, "open", remote=str(self.ws.remote_address))
        self._reader = asyncio.current_task()
        try:
            await self._read_loop()
        except ConnectionClosed:
            if self.session is not None and self.ended is None:
                self._end("disconnect")
        except Exception as exc:  # noqa: BLE001 - a bug must not take the server down
            self._log(logging.ERROR, "internal_error", error=repr(exc))
            log.exception("session %s failed", self.id)
            await self._send({"type": "error", "code": "internal_error", "message": str(exc), "fatal": True})
            await self._close(CLOSE_INTERNAL, "internal error")
        finally:
            if self._pump is not None:
                if self.ended is None:
                    self._end("disconnect")
                try:
                    await asyncio.wait_for(asyncio.shield(self._pump), timeout=60)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    self._pump.cancel()
            self._log(logging.INFO, "close", reason=self.ended or "no_start",
                      audio_s=round(self.audio.seconds, 2) if self.audio else 0, finals=self.finals)

    # --------------------------------------------------------------- reader
    async def _read_loop(self) -> None:
        idle = self.settings.idle_timeout_s
        while self.ended is None:
            try:
                async with asyncio.timeout(idle):
                    message = await self.ws.recv()
            except TimeoutError:
                await self._fatal_end("timeout", "idle_timeout", f"no message for {idle:g} s", CLOSE_IDLE)
                return
            if isinstance(message, bytes):
                await self._on_audio(message)
            else:
                await self._on_text(message)
            if self.errors > MAX_NONFATAL_ERRORS:
                await self._fatal_end("error", "too_many_errors", f"more than {MAX_NONFATAL_ERRORS} protocol errors",
                                      CLOSE_POLICY)
                return
        if self.ended == "stop":
            await self._done.wait()
            await self._send({"type": "closed", "reason": "stop", "audio_s": self._audio_s(),
                              "segments": self.finals})
            await self._close(CLOSE_NORMAL, "stop")

    async def _on_text(self, text: str) -> None:
        if len(text) > self.settings.max_message_bytes:
            return await self._error("message_too_large", f"text message of {len(text)} characters is over the "
                                                          f"{self.settings.max_message_bytes}-byte limit")
        try:
            msg = json.loads(text)
        except ValueError:
            return await self._error("bad_json", "text message is not valid JSON")
        if not isinstance(msg, dict):
            return await self._error("bad_json", "text message must be a JSON object")
        kind = msg.get("type")
        if kind == "start":
            return await self._on_start(msg)
        if kind == "ping":
            return await self._send({"type": "pong", **({"id": msg["id"]} if "id" in msg else {})})
        if kind in ("finalize", "stop"):
            if self.session is None:
                return await self._error("not_started", f"'{kind}' before 'start'")
            if self.ended is not None:
                return None  # the session is already ending; its last final is on the way
            if kind == "finalize":
                self.session.finalize("finalize")
                self._work.set()
            else:
                self._end("stop")
            return None
        return await self._error("unknown_type", f"unknown message type {kind!r}; expected start, "
                                                 "finalize, stop or ping")

    async def _on_start(self, msg: dict[str, Any]) -> None:
        if self.session is not None:
            return await self._error("already_started", "session already started; 'start' ignored")
        if "sample_rate" not in msg:
            return await self._error("invalid_start", "'start' needs sample_rate")
        try:
            fmt = PcmFormat(msg["sample_rate"], msg.get("encoding", "pcm_s16le"), msg.get("channels", 1)).validate()
            options = {k: msg.get(k) for k in ("chunk_s", "left_context_s", "lookahead_s",
                                               "endpoint_silence_s", "max_segment_s")}
            config = self.settings.engine.with_options(options, self.settings.limits)
            interim = msg.get("interim_results", True)
            if not isinstance(interim, bool):
                raise ConfigError("interim_results must be true or false")
            phrases = msg.get("phrases") or []
            if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases) or len(phrases) > 1000:
                raise ConfigError("phrases must be a list of at most 1000 strings")
            rescorer = _phrase_rescorer(self.server.info, phrases, msg.get("phrase_boost", self.settings.phrase_boost))
        except AudioFormatError as exc:
            return await self._error(exc.code, str(exc))
        except ConfigError as exc:
            return await self._error("invalid_option", str(exc))
        self.audio = AudioInput(fmt, self.server.info.sample_rate)
        self.session = StreamingSession(self.server.info, config, interim_results=interim, rescorer=rescorer)
        self._pump = asyncio.get_running_loop().create_task(self._pump_loop(), name=f"pump-{self.id}")
        info = self.server.info
        await self._send({
            "type": "ready", "protocol": PROTOCOL_VERSION, "session_id": self.id, "model": info.name,
            "sample_rate": info.sample_rate, "input_sample_rate": fmt.sample_rate, "encoding": fmt.encoding,
            "channels": fmt.channels, "frame_s": info.frame_seconds,
            **{k: v for k, v in config.as_dict().items() if k != "max_catchup_chunks"},
            **self.server.compute_settings(),
            "interim_results": interim, "phrases": phrases,
        })
        self._log(logging.INFO, "start", rate=fmt.sample_rate, encoding=fmt.encoding, channels=fmt.channels,
                  chunk_s=config.chunk_s, phrases=len(phrases))

    async def _on_audio(self, data: bytes) -> None:
        if self.session is None or self.audio is None:
            return await self._error("not_started", "audio before 'start'; frame rejected")
        if self.ended is not None:  # after stop / while shutting down: the last final is already cut
            self._log(logging.INFO, "audio_after_end", bytes=len(data), reason=self.ended)
            return None
        if len(data) > self.settings.max_message_bytes:
            return await self._error("message_too_large", f"binary frame of {len(data)} bytes is over the "
                                                          f"{self.settings.max_message_bytes}-byte limit; rejected")
        try:
            samples = self.audio.feed(data)
        except AudioFormatError as exc:
            return await self._error(exc.code, str(exc))
        self.session.push(samples)
        self._work.set()
        if self.audio.seconds >= self.settings.max_session_s:
            await self._fatal_end("max_session", "max_session",
                                  f"session reached the {self.settings.max_session_s:g} s limit", CLOSE_MAX_SESSION)
            return None
        # backpressure: stop reading (the socket fills, the client's sends block) until the pump catches up
        while self.session.backlog_seconds > self.settings.max_backlog_s and self.ended is None:
            self._progress.clear()
            await self._progress.wait()
        return None

    def _end(self, reason: str) -> None:
        """No more audio: flush everything into the last final with `reason`."""
        if self.ended is not None or self.session is None or self.audio is None:
            self.ended = self.ended or reason
            self._done.set()
            return
        self.ended = reason
        self.session.push(self.audio.flush())
        self.session.finish(reason)
        self._work.set()

    async def _fatal_end(self, final_reason: str, code: str, message: str, close_code: int) -> None:
        if self.session is not None:
            self._end(final_reason)
            await self._done.wait()
        else:
            self.ended = final_reason
        await self._send({"type": "error", "code": code, "message": message, "fatal": True})
        await self._close(close_code, code)

    async def _close(self, code: int, reason: str) -> None:
        """Close, discarding what the client still sends: unread frames would stall the close handshake."""

        async def discard() -> None:
            try:
                while True:
                    await self.ws.recv()
            except (ConnectionClosed, RuntimeError):
                pass

        drainer = asyncio.get_running_loop().create_task(discard())
        try:
            await self.ws.close(code, reason)
        finally:
            drainer.cancel()

    async def shutdown(self) -> None:
        """Server stopping: last final (reason shutdown), then close 1001."""
        await self._fatal_end("shutdown", "shutting_down", "server is shutting down", CLOSE_GOING_AWAY)
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    # ----------------------------------------------------------------- pump
    async def _pump_loop(self) -> None:
        """Windows to the batcher, events to the client; a model failure ends the session with 1011."""
        try:
            await self._pump_windows()
        except Exception as exc:  # noqa: BLE001 - the reader and stop() must not wait forever
            self._log(logging.ERROR, "internal_error", error=repr(exc))
            log.exception("session %s: recognition failed", self.id)
            self.ended = self.ended or "error"
            await self._send({"type": "error", "code": "internal_error", "fatal": True,
                              "message": f"recognition failed: {exc}"})
            self._done.set()
            self._progress.set()
            await self._close(CLOSE_INTERNAL, "internal error")

    async def _pump_windows(self) -> None:
        session = self.session
        assert session is not None
        batcher = self.server.batcher
        chunk = session.config.chunk_s
        while True:
            catch_up = session.geo.max_catchup if session.backlog_seconds > 3 * chunk else 1
            win = session.next_window(catch_up)
            if win is None:
                await self._flush_events()
                if self.ended is not None and not session.flushing:
                    break
                self._progress.set()
                self._work.clear()
                if session.next_window_ready(catch_up) or (self.ended is not None and not session.flushing):
                    continue
                await self._work.wait()
                continue
            session.accept(win, await batcher.infer(win.model_input))
            self._progress.set()
            await self._flush_events()
        await self._flush_events()
        self._done.set()
        self._progress.set()

    async def _flush_events(self) -> None:
        assert self.session is not None
        for ev in self.session.pop_events():
            if isinstance(ev, Final):
                self.finals += 1
                self._log(logging.INFO, "final", segment=ev.segment, reason=ev.reason, start=round(ev.start, 2),
                          end=round(ev.end, 2), words=len(ev.words), text=ev.text)
            elif isinstance(ev, Partial) and self.ended == "disconnect":
                continue
            await self._send(ev.to_dict())

    # -------------------------------------------------------------- helpers
    async def _send(self, obj: dict[str, Any]) -> None:
        await _send_json(self.ws, obj)

    async def _error(self, code: str, message: str) -> None:
        self.errors += 1
        self._log(logging.INFO, "error", code=code, message=message)
        await self._send({"type": "error", "code": code, "message": message, "fatal": False})

    def _audio_s(self) -> float:
        return round(self.audio.seconds, 3) if self.audio else 0.0


def _phrase_rescorer(info: ModelInfo, phrases: list[str], boost: float | None):  # type: ignore[no-untyped-def]
    """A SegmentRescorer biased toward `phrases`, or None without phrases."""
    if not phrases:
        return None
    from .phrase_rescore import PhraseRescorer

    return PhraseRescorer(info, phrases, boost)


async def _send_json(ws: ServerConnection, obj: dict[str, Any]) -> None:
    """Send one protocol message; a peer that already left is not an error."""
    try:
        await ws.send(json.dumps(obj))
    except ConnectionClosed:
        pass


def _http(status: int, body: dict[str, Any] | str, extra: dict[str, str] | None = None,
          content_type: str = "application/json") -> Response:
    data = (json.dumps(body) if isinstance(body, dict) else body).encode()
    headers = Headers({"Content-Type": f"{content_type}; charset=utf-8" if content_type.startswith(("text", "application/j"))
                       else content_type, "Content-Length": str(len(data)), "Cache-Control": "no-store",
                       "X-Content-Type-Options": "nosniff"})
    for k, v in (extra or {}).items():
        headers[k] = v
    reasons = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}
    return Response(status, reasons.get(status, "Error"), headers, data)


def _static(path: str) -> Response:
    """Files of the captioning page, from the package's web/ folder only."""
    name = "index.html" if path in ("", "/") else path.lstrip("/")
    target = (WEB_DIR / name).resolve()
    if "/" in name or not target.is_file() or target.parent != WEB_DIR.resolve():
        return _http(404, {"error": "not_found", "message": f"no such page: {path}"})
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if name.endswith(".js"):
        ctype = "text/javascript"
    body = target.read_bytes()
    headers = Headers({"Content-Type": f"{ctype}; charset=utf-8" if ctype.startswith("text") else ctype,
                       "Content-Length": str(len(body)), "Cache-Control": "no-cache",
                       "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                       "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                       "Permissions-Policy": "microphone=(self)"})
    return Response(200, "OK", headers, body)


# ------------------------------------------------------------------ CLI glue
def add_server_args(p: argparse.ArgumentParser) -> None:
    d = ServerSettings()
    p.add_argument("--host", default=d.host, help="address to listen on (%(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="port, 0 = any free one (%(default)s)")
    p.add_argument("--token", default=os.environ.get("STREAMING_ASR_TOKEN"),
                   help="require this token (Bearer header or ?token=); default: $STREAMING_ASR_TOKEN")
    p.add_argument("--max-sessions", type=int, default=d.max_sessions, help="concurrent sessions (%(default)s)")
    p.add_argument("--max-message-bytes", type=int, default=d.max_message_bytes,
                   help="largest message accepted (%(default)s)")
    p.add_argument("--idle-timeout", type=float, default=d.idle_timeout_s,
                   help="close a session after this many seconds without a message (%(default)s)")
    p.add_argument("--max-session", type=float, default=d.max_session_s,
                   help="longest session in seconds of audio (%(default)s)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="windows per batched forward (%(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help="how long an idle model waits to fill a batch (%(default)s ms)")
    p.add_argument("--model-workers", type=int, default=None,
                   help="batches computed at once, each on its own thread (default: 2 on CPU, 1 on CUDA)")


def settings_from_args(args: argparse.Namespace, config: StreamConfig, plan: WorkerPlan) -> ServerSettings:
    return ServerSettings(host=args.host, port=args.port, token=args.token or None, max_sessions=args.max_sessions,
                          max_message_bytes=args.max_message_bytes, idle_timeout_s=args.idle_timeout,
                          max_session_s=args.max_session, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                          model_workers=plan.workers, model_threads=plan.threads, engine=config)


def serve_from_args(args: argparse.Namespace, config: StreamConfig) -> int:
    from .cli import model_precision, usable_config

    if os.environ.get("STREAMING_ASR_TUNE_MALLOC") == "1":  # opt-in: less RSS, some compute (README)
        from .model.runtime import tune_allocator

        tune_allocator()
    model = CtcModel.load(args.model, device=args.device, precision=model_precision(args))
    plan = plan_workers(model.device, args.model_workers, args.threads)
    settings = settings_from_args(args, usable_config(model, config), plan)
    log.info("model %s on %s: precision=%s workers=%d threads/worker=%d reuse=%s", args.model, model.device,
             model.precision, plan.workers, plan.threads, settings.engine.reuse)
    info = replace(model.info, name=args.model)
    return asyncio.run(run_until_signal(model, info, settings))


async def run_until_signal(forward: ForwardFn, info: ModelInfo, settings: ServerSettings) -> int:
    server = AsrServer(forward, info, settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"streaming-asr: listening on ws://{settings.host}:{server.port}{STREAM_PATH} "
          f"(page: http://{settings.host}:{server.port}/)", flush=True)
    await stop.wait()
    log.info("signal received: shutting down gracefully")
    await server.stop()
    return 0
