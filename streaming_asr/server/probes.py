"""The operator's view of a server: /health (status), /health/live, /health/ready, /metrics and the
page's token check (/v1/auth) — read-only handlers over AsrServer's state."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import PROTOCOL_VERSION, __version__
from .http import RETRY_AFTER_S, error_response, json_response, token_ok

if TYPE_CHECKING:
    from .app import AsrServer


class Probes:
    """Handlers for the health, readiness, metrics and auth routes of one server."""

    def __init__(self, server: AsrServer) -> None:
        self.server = server

    def status(self) -> dict[str, Any]:
        started = sum(1 for c in self.server.connections if c.driver.started)
        return {
            "status": "stopping" if self.server._stopping else "draining" if self.server._draining else "ok",
            "protocol": PROTOCOL_VERSION,
            "version": __version__,
            "model": self.server.info.name,
            "sessions": started,
            "connections": len(self.server.connections),
            "max_sessions": self.server.settings.max_sessions,
            "unstarted": len(self.server.connections) - started,
            "max_unstarted": self.server.settings.max_unstarted,
            "queue_depth": self.server.batcher.queue_depth,
            **self.server.ctx.compute_settings(),
            "model_workers": self.server.settings.model_workers,
            "capacity": self.server.ctx.admission.as_dict(),
            "uptime_s": round(time.monotonic() - self.server.started, 1),
            "batching": self.server.batcher.stats.as_dict(),
        }

    async def health(self, request: web.Request) -> web.Response:
        return json_response(200, self.status())

    async def live(self, request: web.Request) -> web.Response:
        """Liveness: the process serves HTTP (a probe that restarts it on failure)."""
        return json_response(200, {"status": "live"})

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness: 200 while new sessions are welcome; 503 with the reason while draining or full."""
        reason = None
        if self.server.draining:
            reason = "draining"
        elif self.server.full_reason() is not None:
            reason = "full"
        if reason:
            return json_response(503, {"ready": False, "reason": reason}, {"Retry-After": str(RETRY_AFTER_S)})
        return json_response(200, {"ready": True})

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text exposition; `--metrics-token` guards it when set (like /health, open otherwise)."""
        expected = self.server.settings.metrics_token
        if expected and not token_ok(request, expected):
            return error_response(401, "unauthorized", "missing or wrong metrics token", {"WWW-Authenticate": "Bearer"})
        return web.Response(
            body=self.server.metrics.render(), headers={"Content-Type": self.server.metrics.content_type}
        )

    async def auth(self, request: web.Request) -> web.Response:
        ok = token_ok(request, self.server.settings.token)
        return json_response(200 if ok else 401, {"ok": ok, "token_required": bool(self.server.settings.token)})
