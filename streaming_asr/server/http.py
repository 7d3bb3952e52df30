"""HTTP on the server's port: one route table, request guards, the captioning page's files.

Routes are keyed by (method, path) in `ROUTES`; aiohttp answers HEAD for every GET route, 405 with
`Allow` for other methods on a known path, and we render 404/405/414 as JSON errors. A request
target over MAX_TARGET_BYTES is 414; methods the HTTP parser does not know at all (`FOO`) are
400 from the parser. The WebSocket handshake is guarded here too: token and Origin.
"""

from __future__ import annotations

import hmac
import logging
import mimetypes
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from .wire import json_text

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STREAM_PATH = "/v1/stream"
MAX_TARGET_BYTES = 8192
MAX_LINE_BYTES = 1 << 20  # the parser reads request lines up to this, so longer targets still get our 414
MAX_NAME_CHARS = 128
CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'"
)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json_text(body),  # UTF-8 as it is (aiohttp sends charset=utf-8)
        content_type="application/json",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", **(headers or {})},
    )


RETRY_AFTER_S = 5  # what a refused handshake or a failing readiness probe suggests


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(status, {"error": code, "message": message}, headers)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Over-long targets are 414; aiohttp's 404/405 become JSON errors (405 keeps its Allow header)."""
    if len(request.raw_path) > MAX_TARGET_BYTES:
        return error_response(414, "uri_too_long", f"request target over {MAX_TARGET_BYTES} bytes")
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        return error_response(
            405,
            "method_not_allowed",
            f"{request.method[:20]} is not allowed here",
            {"Allow": exc.headers.get("Allow", "GET, HEAD")},
        )
    except web.HTTPNotFound:
        return error_response(404, "not_found", "no such page")


class QuietBadRequests(logging.Filter):
    """aiohttp logs every unparseable request as an ERROR with a traceback: one INFO line is enough
    (hostile clients must not be able to flood the log with tracebacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            record.msg, record.args = (
                "bad HTTP request refused: %s",
                ((str(exc.message).strip().splitlines() or [""])[0][:200],),
            )
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install_log_filter() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietBadRequests) for f in logger.filters):
        logger.addFilter(QuietBadRequests())


def token_ok(request: web.Request, expected: str | None) -> bool:
    """The Bearer header or ?token= carries `expected` (always true without a token)."""
    if not expected:
        return True
    auth = request.headers.get("Authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.query.get("token")
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def origin_ok(request: web.Request, allowed: tuple[str, ...]) -> bool:
    """Cross-site WebSocket hijacking guard: a browser's Origin must be ours, localhost, or listed.

    Non-browser clients send no Origin and are not affected.
    """
    origin = request.headers.get("Origin")
    if origin is None or "*" in allowed:
        return True
    origin = origin.strip().rstrip("/")
    if origin in allowed:
        return True
    parts = urlsplit(origin)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host in LOCAL_HOSTS or f"[{host}]" in LOCAL_HOSTS:
        return True
    return parts.netloc.lower() == request.headers.get("Host", "").lower()


async def page(request: web.Request) -> web.StreamResponse:
    """Files of the captioning page, from the package's web/ folder only."""
    name = request.match_info.get("name", "") or "index.html"
    if len(name) > MAX_NAME_CHARS or "/" in name or "\\" in name or name.startswith("."):
        return error_response(404, "not_found", "no such page")
    target = WEB_DIR / name
    try:
        if not target.is_file() or target.resolve().parent != WEB_DIR:
            return error_response(404, "not_found", "no such page")
        body = target.read_bytes()
    except (OSError, ValueError):
        return error_response(404, "not_found", "no such page")
    ctype = "text/javascript" if name.endswith(".js") else mimetypes.guess_type(name)[0] or "application/octet-stream"
    headers = {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Permissions-Policy": "microphone=(self)",
    }
    charset = "utf-8" if ctype.startswith("text") or ctype.endswith(("json", "svg+xml")) else None
    return web.Response(body=body, content_type=ctype, charset=charset, headers=headers)


def add_routes(app: web.Application, routes: list[tuple[str, str, Handler]]) -> None:
    """Install the (method, path, handler) table; GET routes answer HEAD too."""
    for method, path, handler in routes:
        if method == "GET":
            app.router.add_get(path, handler, allow_head=True)
        else:
            app.router.add_route(method, path, handler)


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """--tls-cert/--tls-key: TLS on the same port (a bad file fails at start-up, not per client)."""
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
