"""The port while the model loads: liveness yes, readiness `loading`, everything else 503.

`serve` opens its port before it loads the model, so an orchestrator sees a live process at once
(and does not restart it during a long download) while its readiness probe keeps traffic away.
When the model is loaded and warmed up, this placeholder hands the port to the real server.
"""

from __future__ import annotations

import ssl

from aiohttp import web

from .http import json_response

RETRY_AFTER = {"Retry-After": "5"}


async def _live(request: web.Request) -> web.Response:
    return json_response(200, {"status": "live"})


async def _loading(request: web.Request) -> web.Response:
    return json_response(503, {"ready": False, "reason": "loading"}, RETRY_AFTER)


async def _health(request: web.Request) -> web.Response:
    return json_response(200, {"status": "loading"})


async def _refuse(request: web.Request) -> web.Response:
    return json_response(503, {"error": "loading", "message": "the model is loading; try again shortly"}, RETRY_AFTER)


class LoadingPlaceholder:
    """A minimal aiohttp site on the server's port until the real one takes over."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.requested_port, self.tls = host, port, tls
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health/live", _live)
        app.router.add_get("/health/ready", _loading)
        app.router.add_get("/health", _health)
        app.router.add_route("*", "/{tail:.*}", _refuse)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port, ssl_context=self.tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
