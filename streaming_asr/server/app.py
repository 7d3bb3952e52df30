"""The server: model, batcher, admission and live connections behind one aiohttp app on one port.

`AsrServer` owns the lifecycle (start, calibrate, graceful stop); `ServerContext` is what a
session driver may use of it. HTTP routes are the table in `_routes`; each WebSocket protocol is a
codec (protocol_v1.py) run by the same connection shell and session driver.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
from aiohttp import web

from ..batcher import Batcher, ForwardFn
from ..model import ModelInfo
from ..model.adapters import Adapters
from ..session import StreamingSession
from . import handshake
from .admission import Admission
from .connection import WsConnection
from .http import (
    MAX_LINE_BYTES,
    RETRY_AFTER_S,
    STREAM_PATH,
    add_routes,
    error_response,
    guard,
    install_log_filter,
    origin_ok,
    page,
    tls_context,
)
from .language_id import lid_for
from .metrics import Metrics
from .model_routes import ModelRoutes
from .probes import Probes
from .settings import ServerSettings, allowed_languages
from .transcriptions import Transcriptions
from .wire import CLOSE_GOING_AWAY, CLOSE_TRY_LATER

log = logging.getLogger("streaming_asr.server")
REFUSALS = {400: "bad_request", 401: "unauthorized", 403: "forbidden_origin"}  # handshake statuses -> reason


class ServerContext:
    """What sessions share: model info, settings, the batcher, admission and a pool for heavy session work."""

    def __init__(self, forward: ForwardFn, info: ModelInfo, settings: ServerSettings) -> None:
        self.info = info
        self.settings = settings
        self.adapters: Adapters | None = getattr(forward, "adapters", None)  # per-language adapters, or None
        self.languages = allowed_languages(  # what `start` may ask for (ConfigError: not in the checkpoint)
            settings.languages,
            self.adapters.languages if self.adapters else (),
            self.adapters.default if self.adapters else None,
            info.name,
        )
        self.lid = lid_for(settings, self.adapters)  # --lid-model for `language: auto` (loaded in prepare)
        init = None
        if settings.model_threads:
            from ..model.runtime import set_torch_threads

            init = partial(set_torch_threads, settings.model_threads)
        self.batcher = Batcher(forward, settings.max_batch, settings.max_wait_ms / 1000, settings.model_workers, init)
        self.precision = str(getattr(forward, "precision", "fp32"))
        self.cpu_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="asr-session")
        self.metrics: Metrics | None = None  # set by the server
        self.admission = Admission(
            settings.engine,
            info.frame_seconds,
            settings.model_workers,
            settings.max_load,
            settings.max_session_cost,
            settings.max_queue_delay_s,
            self.batcher.queue_delay_p95,
        )

    def compute_settings(self) -> dict[str, Any]:
        """How the model runs: reported in /health and in every `ready`."""
        reuse = self.settings.engine.reuse
        return {"precision": self.precision, "feature_reuse": reuse != "recompute", "state_reuse": reuse == "state"}


class AsrServer:
    """Owns the app, the context and the set of live connections."""

    def __init__(self, forward: ForwardFn, info: ModelInfo, settings: ServerSettings) -> None:
        self.ctx = ServerContext(forward, info, settings)
        self.metrics = self.ctx.metrics = Metrics(
            info.name,
            self.ctx.precision,
            str(getattr(forward, "device", "cpu")),
            active=lambda: sum(1 for c in self.connections if c.driver.started and not c.driver.ended),
            capacity=lambda: float(self.ctx.admission.as_dict()["default_sessions"] or 0),
        )
        self.ctx.batcher.observer = self.metrics.on_batch
        self.info, self.settings = info, settings
        self.connections: set[WsConnection] = set()
        self.started = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._stopping = False
        self._draining = False
        self._drain_cut = asyncio.Event()
        self.probes = Probes(self)
        self.model_routes = ModelRoutes(self.ctx, lambda: self._stopping or self._draining)

    @property
    def batcher(self) -> Batcher:
        return self.ctx.batcher

    # ----------------------------------------------------------- lifecycle
    async def start(self, port: int | None = None) -> None:
        await self.prepare()
        await self.listen(port)

    async def prepare(self) -> None:
        """Model threads up and warmed (calibration runs default windows): what readiness waits for."""
        self.batcher.start()
        await self.model_routes.prepare()
        if self.ctx.lid is not None:
            await self.ctx.lid.load(str(getattr(self.batcher.forward, "device", "cpu")))
        await self.calibrate()

    async def listen(self, port: int | None = None) -> None:
        """Open the port (`port` overrides the settings': the one the loading placeholder held)."""
        app = web.Application(middlewares=[guard], client_max_size=self.settings.max_message_bytes)
        add_routes(app, self._routes())
        install_log_filter()
        self._runner = web.AppRunner(
            app,
            access_log=None,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=16384,
            shutdown_timeout=self.settings.close_timeout_s,
        )
        await self._runner.setup()
        self._site = web.TCPSite(
            self._runner, self.settings.host, self.settings.port if port is None else port, ssl_context=self._tls()
        )
        await self._site.start()
        scheme = "wss" if self.settings.tls_cert else "ws"
        log.info(
            "listening on %s://%s:%d%s model=%s", scheme, self.settings.host, self.port, STREAM_PATH, self.info.name
        )

    def _tls(self) -> ssl.SSLContext | None:
        return tls_context(self.settings.tls_cert, self.settings.tls_key)

    def _routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", STREAM_PATH, self._stream),
            ("GET", "/v1/listen", self._deepgram),
            ("GET", "/vosk", self._vosk),
            ("GET", "/health", self.probes.health),
            ("GET", "/health/live", self.probes.live),
            ("GET", "/health/ready", self.probes.ready),
            ("GET", "/metrics", self.probes.metrics),
            ("GET", "/v1/auth", self.probes.auth),
            ("GET", "/", self._root),
            ("GET", "/{name}", page),
            (
                "POST",
                "/v1/audio/transcriptions",
                Transcriptions(self.ctx, lambda: self._stopping or self._draining).handle,
            ),
            ("POST", "/v1/embed", self.model_routes.embed),
            ("POST", "/v1/classify", self.model_routes.classify),
            ("POST", "/v1/units", self.model_routes.units),
            ("POST", "/v1/align", self.model_routes.align),
        ]

    async def calibrate(self) -> None:
        """Time one steady-state window of the default geometry: the admission's cost reference."""
        if not self.settings.max_load:
            return
        cfg = self.settings.engine
        session = StreamingSession(self.info, cfg, interim_results=False)
        seconds = cfg.left_context_s + 3 * cfg.chunk_s + cfg.lookahead_s
        rng = np.random.default_rng(0)
        session.push((rng.standard_normal(int(seconds * self.info.sample_rate)) * 0.01).astype(np.float32))
        timings = []
        while (win := session.next_window(1)) is not None:
            t0 = time.perf_counter()
            session.accept(win, await self.batcher.infer(win.model_input))
            timings.append(time.perf_counter() - t0)
        cost = min(timings[-2:]) if len(timings) >= 2 else (timings[-1] if timings else 0.0)
        self.ctx.admission.calibrate(cost)
        log.info(
            "admission: default window %.4f s -> %.3f model-s per audio-s per session; capacity %.2f (%s sessions)",
            cost,
            cost / cfg.chunk_s,
            self.ctx.admission.capacity,
            self.ctx.admission.as_dict()["default_sessions"],
        )

    @property
    def port(self) -> int:
        assert self._site is not None and self._site._server is not None
        server: Any = self._site._server  # asyncio.Server (typed as AbstractServer)
        return int(server.sockets[0].getsockname()[1])

    @property
    def draining(self) -> bool:
        return self._draining or self._stopping

    async def drain(self, timeout: float | None = None) -> None:
        """SIGTERM: fail readiness and refuse new sessions with HTTP 503 at once, let open sessions go
        on for up to `timeout` (--drain-timeout) or until `cut_drain()`, then stop (finals, 1001)."""
        self._draining = True
        timeout = self.settings.drain_timeout_s if timeout is None else timeout
        log.info("draining: %d open session(s), up to %.0f s", len(self.connections), timeout)
        deadline = asyncio.get_running_loop().time() + timeout
        while self.connections and not self._drain_cut.is_set():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self._drain_cut.wait(), min(0.1, left))
            except TimeoutError:
                pass
        await self.stop()

    def cut_drain(self) -> None:
        """A second SIGINT: stop waiting for open sessions; their finals are cut now."""
        self._drain_cut.set()

    async def stop(self, timeout: float = 30.0) -> None:
        """Graceful: refuse new sessions, give open ones their last final, close them with 1001."""
        if self._stopping:
            return
        self._stopping = True
        conns = list(self.connections)
        if conns:
            log.info("shutdown: finishing %d open session(s)", len(conns))
            tasks = [asyncio.ensure_future(c.shutdown(timeout)) for c in conns]
            _, late = await asyncio.wait(tasks, timeout=timeout + self.settings.close_timeout_s + 1)
            for c, t in zip(conns, tasks):
                if t in late:
                    c.abort()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.batcher.close()
        self.model_routes.close()
        if self.ctx.lid is not None:
            self.ctx.lid.close()
        self.ctx.cpu_pool.shutdown(wait=False, cancel_futures=True)
        log.info("server stopped")

    def status(self) -> dict[str, Any]:
        return self.probes.status()

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        return await self._websocket(request, handshake.v1)

    async def _deepgram(self, request: web.Request) -> web.StreamResponse:
        return await self._websocket(request, handshake.deepgram)

    async def _vosk(self, request: web.Request) -> web.StreamResponse:
        return await self._websocket(request, handshake.vosk)

    async def _root(self, request: web.Request) -> web.StreamResponse:
        """`/`: the captioning page, or (with --vosk-root) a vosk client's WebSocket."""
        if self.settings.vosk_root and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._vosk(request)
        return await page(request)

    async def _websocket(self, request: web.Request, shake: handshake.Shake) -> web.StreamResponse:
        """Every WebSocket protocol: its handshake, the Origin guard, limits, then one WsConnection."""
        s = self.settings
        if self.draining:  # before the upgrade, so a balancer can retry another replica
            self.metrics.refused.labels("draining").inc()
            return error_response(
                503,
                "shutting_down",
                "this server is draining; connect again (another replica)",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        hs = shake(request, self.ctx)
        if hs.refusal is not None or hs.codec is None:
            self.metrics.refused.labels(REFUSALS.get(hs.refusal.status if hs.refusal else 500, "error")).inc()
            return hs.refusal or error_response(500, "internal_error", "no codec")
        if not hs.authorized and not origin_ok(request, s.allowed_origins):
            self.metrics.refused.labels("forbidden_origin").inc()
            log.info("handshake refused: origin %r not allowed", request.headers.get("Origin", "")[:200])
            return error_response(
                403, "forbidden_origin", "this Origin may not open sessions here (see --allowed-origins)"
            )
        full = self.full_reason()
        if (
            full is not None
        ):  # also before the upgrade: a balancer retries another replica (the page asks /health/ready)
            self.metrics.refused.labels("server_full").inc()
            log.warning("handshake refused: %s", full)
            return error_response(503, "server_full", full, {"Retry-After": str(RETRY_AFTER_S)})
        codec = hs.codec
        ws = web.WebSocketResponse(
            autoping=False,
            max_msg_size=4 * s.max_message_bytes,
            compress=False,
            decode_text=False,
            timeout=s.close_timeout_s,
            writer_limit=1 << 16,
            protocols=hs.protocols,
        )
        if not ws.can_prepare(request).ok:
            return error_response(
                426, "upgrade_required", f"{request.path[:100]} is a WebSocket endpoint", {"Upgrade": "websocket"}
            )
        ws.headers.update(hs.headers)
        await ws.prepare(request)
        refusal = self._refusal()
        if refusal is not None:
            code, message, close = refusal
            self.metrics.refused.labels(code).inc()
            for text in codec.render_error(code, message):
                await ws.send_str(text)
            close, reason = codec.close_frame(close, code)
            await ws.close(code=close, message=reason.encode())
            return ws
        conn = WsConnection(self.ctx, ws, request, codec)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
        return ws

    def full_reason(self) -> str | None:
        """Why one more session would not fit now (the cap, unstarted connections, capacity), or None."""
        s = self.settings
        if len(self.connections) >= s.max_sessions:
            return f"server is at its limit of {s.max_sessions} sessions; try again later"
        unstarted = sum(1 for c in self.connections if not c.driver.started)
        if unstarted >= s.max_unstarted:
            return f"too many connections ({unstarted}) have not sent 'start'; try again later"
        if not self.ctx.admission.has_room():
            return self.ctx.admission.refusal()
        return None

    def _refusal(self) -> tuple[str, str, int] | None:
        """After the upgrade (handshakes racing past `full_reason`): refused in the protocol's own words."""
        if self._stopping:
            return "shutting_down", "server is stopping", CLOSE_GOING_AWAY
        s = self.settings
        if len(self.connections) >= s.max_sessions:
            log.warning("session refused: server full (%d connections)", len(self.connections))
            return (
                "server_full",
                f"server is at its limit of {s.max_sessions} sessions; try again later",
                CLOSE_TRY_LATER,
            )
        unstarted = sum(1 for c in self.connections if not c.driver.started)
        if unstarted >= s.max_unstarted:
            log.warning("session refused: %d connections have not started", unstarted)
            return (
                "server_full",
                f"too many connections ({unstarted}) have not sent 'start'; try again later",
                CLOSE_TRY_LATER,
            )
        return None
