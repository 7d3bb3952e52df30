"""Per-protocol WebSocket handshakes: each reads its own URL and credentials into a codec, or refuses.

Everything after the handshake (limits, admission, deadlines, draining) is common to all protocols
and lives in app.py and connection.py; what differs is only how a protocol authenticates, how it
says no before the upgrade, and which codec runs the connection.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from .deepgram import DeepgramCodec, new_request_id
from .deepgram_options import QueryError, keyterms_of, parse_query
from .http import error_response, json_response, token_ok
from .protocol_v1 import ProtocolV1
from .vosk import VoskCodec
from .wire import Codec

if TYPE_CHECKING:
    from .app import ServerContext

log = logging.getLogger("streaming_asr.server")


@dataclass
class Handshake:
    """A codec for the connection, or the HTTP answer that refuses it."""

    codec: Codec | None = None
    refusal: web.Response | None = None
    authorized: bool = False  # a valid token was shown (an Origin check is then not needed)
    protocols: tuple[str, ...] = ()  # WebSocket subprotocols we may select
    headers: dict[str, str] = field(default_factory=dict)


Shake = Callable[[web.Request, "ServerContext"], "Handshake"]


def v1(request: web.Request, ctx: ServerContext) -> Handshake:
    s = ctx.settings
    if not token_ok(request, s.token):
        log.info("handshake refused: bad or missing token from %s", request.remote)
        return Handshake(
            refusal=error_response(401, "unauthorized", "missing or wrong token", {"WWW-Authenticate": "Bearer"})
        )
    return Handshake(ProtocolV1(s.max_message_bytes), authorized=bool(s.token))


def vosk(request: web.Request, ctx: ServerContext) -> Handshake:
    """vosk clients have no authentication: with --token they must add ?token= to the URL."""
    s = ctx.settings
    if not token_ok(request, s.token):
        log.info("vosk handshake refused: bad or missing token from %s", request.remote)
        return Handshake(refusal=error_response(401, "unauthorized", "missing or wrong token (add ?token=)"))
    return Handshake(VoskCodec(s.vosk_sample_rate, s.max_message_bytes), authorized=bool(s.token))


def deepgram(request: web.Request, ctx: ServerContext) -> Handshake:
    """Deepgram's credentials (Authorization: Token/Bearer, or the browser's `token, KEY`
    subprotocol), its query options, and its error bodies (`err_code`, `err_msg`, `request_id`)."""
    s = ctx.settings
    request_id = new_request_id()
    headers = {"dg-request-id": request_id}
    key, via_protocol = _deepgram_key(request)
    if s.token and not (key is not None and hmac.compare_digest(key.encode(), s.token.encode())):
        log.info("deepgram handshake refused: bad or missing key from %s", request.remote)
        return Handshake(
            refusal=json_response(
                401,
                {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.", "request_id": request_id},
                {**headers, "dg-error": "Invalid credentials."},
            )
        )
    try:
        opts = parse_query(request.query, keyterms_of(list(request.query.items())), s.model_language, ctx.languages)
    except QueryError as exc:
        return Handshake(
            refusal=json_response(
                400,
                {"err_code": "Bad Request", "err_msg": str(exc), "request_id": request_id},
                {**headers, "dg-error": str(exc)},
            )
        )
    codec = DeepgramCodec(opts, ctx.info.name, s.max_message_bytes, request_id, s.idle_timeout_s)
    return Handshake(codec, authorized=bool(s.token), protocols=("token",) if via_protocol else (), headers=headers)


def _deepgram_key(request: web.Request) -> tuple[str | None, bool]:
    """The API key and whether it came in Sec-WebSocket-Protocol (which must then be answered)."""
    auth = request.headers.get("Authorization", "").strip()
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip(), False
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if len(offered) >= 2 and offered[0].lower() in ("token", "bearer"):
        return offered[1], True
    return request.query.get("token"), False
