"""The client end of one WebSocket as the server may use it: sends and closes that never wait too long.

Every send has a deadline (`send_timeout_s`, or less once `limit_wait` has set an overall one, as a
shutdown does: the send in progress is cut to it too). A send that misses its deadline makes the
peer `dead` ("slow_consumer"); a failed write makes it "disconnect"; a dead peer's sends are no-ops.
A close handshake that does not finish in time, fails or is cancelled aborts the TCP connection:
a transport left "closing" with a full buffer would otherwise hold its memory forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from .settings import ServerSettings

log = logging.getLogger("streaming_asr.server")


class Peer:
    """Deadline-bounded writes to one WebSocket client; `dead` says why it can no longer be written to."""

    def __init__(
        self, ws: web.WebSocketResponse, request: web.Request, settings: ServerSettings, on_slow: Callable[[], None]
    ) -> None:
        self.ws, self.request, self.settings = ws, request, settings
        self.loop = asyncio.get_running_loop()
        self.dead: str | None = None  # "disconnect", "slow_consumer" or "error"
        self.gone = asyncio.Event()
        self.clean_close = False
        self._on_slow = on_slow
        self._lock = asyncio.Lock()
        self._deadline: float | None = None  # absolute loop time no wait on the peer may pass
        self._send_cm: asyncio.Timeout | None = None  # the deadline of the send in progress

    def mark_dead(self, why: str) -> None:
        if self.dead is None:
            self.dead = why
            self.gone.set()

    def limit_wait(self, seconds: float) -> None:
        """From now on no wait on the peer ends later than `seconds` from now, the one in progress included."""
        deadline = self.loop.time() + seconds
        self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
        cm = self._send_cm
        if cm is not None and (cm.when() is None or cm.when() > self._deadline):  # type: ignore[operator]
            cm.reschedule(self._deadline)

    def wait_for(self, default: float) -> float:
        if self._deadline is None:
            return default
        return max(0.05, min(default, self._deadline - self.loop.time()))

    async def send_text(self, text: str) -> None:
        await self.send(lambda: self.ws.send_str(text))

    async def send(self, op: Callable[[], object]) -> None:
        if self.dead is not None:
            return
        try:
            async with asyncio.timeout(self.wait_for(self.settings.send_timeout_s)) as cm:
                async with self._lock:
                    if self.dead is None and not self.ws.closed:
                        self._send_cm = cm
                        try:
                            await op()  # type: ignore[misc]
                        finally:
                            self._send_cm = None
        except TimeoutError:
            self._on_slow()
            self.mark_dead("slow_consumer")
        except (ConnectionError, RuntimeError):
            self.mark_dead("disconnect")

    async def close(self, code: int, reason: str, limit_s: float | None = None) -> None:
        """Close handshake within close_timeout (aiohttp discards what the client still sends), else abort."""
        clean = False
        try:
            async with asyncio.timeout(self.wait_for(limit_s or self.settings.close_timeout_s)):
                await self.ws.close(code=code, message=reason.encode()[:120])
            clean = True
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:  # a cancelled close too
            self.clean_close = clean
            if not clean:
                self.abort()

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()
