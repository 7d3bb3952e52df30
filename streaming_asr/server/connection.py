"""One WebSocket connection (aiohttp) between a wire codec and a SessionDriver: the I/O shell.

It owns the deadlines that involve the peer:
- `start_timeout_s`: a valid start must arrive in time (error `start_timeout`, close 4002);
- `idle_timeout_s`: the client must keep *sending* (text or binary messages; its WebSocket pings are
  answered but are keepalives, not activity) and keep *reading* (it answers our WebSocket pings, sent
  every idle/4 s); either silence past the timeout ends the session (final, error `idle_timeout`,
  close 4000; a client that does not read gets 1 s for the close handshake). Time we spend not
  reading (backpressure, computing a last final) is not held against the client;
- `send_timeout_s`: every send has a deadline; a client whose buffer stays full past it is a slow
  consumer: its session is finished (the final is logged), it is closed with 1008 and aborted;
- `close_timeout_s`: a close handshake, or a shutdown's last messages, never wait on a peer longer.
Exactly one path concludes a connection (stop, fatal error, timeout or shutdown); others wait for it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from .driver import SessionDriver
from .peer import Peer
from .wire import (
    CLOSE_GOING_AWAY,
    CLOSE_IDLE,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_START_TIMEOUT,
    Answer,
    Audio,
    Codec,
    Command,
    DriverError,
    Failure,
    Finalize,
    Invalid,
    Outgoing,
    Reply,
    Start,
    Stop,
)

if TYPE_CHECKING:
    from .app import ServerContext

log = logging.getLogger("streaming_asr.server")
MAX_NONFATAL_ERRORS = 50
_GONE = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


class WsConnection:
    """Reader loop, deadline-bounded sends and the one conclusion of a connection."""

    def __init__(self, ctx: ServerContext, ws: web.WebSocketResponse, request: web.Request, codec: Codec) -> None:
        self.ctx, self.ws, self.request, self.codec = ctx, ws, request, codec
        self.settings = ctx.settings
        self.idle_timeout_s = codec.idle_timeout_s or ctx.settings.idle_timeout_s
        self.driver = SessionDriver(ctx, self.deliver, codec.name)
        self.loop = asyncio.get_running_loop()
        self.opened = self.last_in = self.last_pong = self.loop.time()
        self.errors = 0
        self.peer = Peer(
            ws,
            request,
            ctx.settings,
            lambda: self.driver.log(logging.WARNING, "slow_consumer", send_timeout_s=self.settings.send_timeout_s),
        )
        self._concluding = False
        self._concluded = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.driver.on_failure = self._on_driver_failure

    @property
    def id(self) -> str:
        return self.driver.id

    # ------------------------------------------------------------------ life
    async def run(self) -> None:
        d = self.driver
        d.log(logging.INFO, "open", remote=str(self.request.remote))
        self._reader = self.loop.create_task(self._read_loop(), name=f"reader-{d.id}")
        dead = self.loop.create_task(self.peer.gone.wait())
        try:
            await asyncio.wait({self._reader, dead}, return_when=asyncio.FIRST_COMPLETED)
            await self._finish_reader()
            d.finish(self.peer.dead or "disconnect")
            try:
                await asyncio.wait_for(d.wait_done(), timeout=60)
            except TimeoutError:
                d.cancel()
            if not self.ws.closed:
                slow = self.peer.dead == "slow_consumer"
                await self.peer.close(
                    CLOSE_POLICY if slow else CLOSE_NORMAL, self.peer.dead or "closed", 1.0 if slow else None
                )
        finally:  # whatever happened above (even a cancelled handler): no socket, share or task outlives us
            dead.cancel()
            if not self._reader.done():
                self._reader.cancel()
            d.finish(self.peer.dead or "disconnect")  # the pump runs on and logs the final
            if not self.peer.clean_close:
                self.peer.abort()
            d.release()
            if self.ctx.metrics is not None:
                self.ctx.metrics.sessions.labels(d.ended if d.started else "no_start", d.protocol).inc()
                self.ctx.metrics.audio.inc(d.audio_s)
            d.log(
                logging.INFO,
                "close",
                reason=d.ended if d.started else "no_start",
                audio_s=round(d.audio_s, 2),
                finals=d.finals,
                **({"peer": self.peer.dead} if self.peer.dead else {}),
            )
            d.drop()

    async def _finish_reader(self) -> None:
        assert self._reader is not None
        if not self._reader.done():
            self._reader.cancel()
        try:
            await self._reader
        except asyncio.CancelledError:
            if not self._reader.cancelled():
                raise  # we ourselves are being cancelled
        except Exception as exc:  # noqa: BLE001 - a bug must not take the server down
            self.driver.log(logging.ERROR, "internal_error", error=repr(exc))
            log.exception("session %s failed", self.driver.id)
            failure = Failure("internal_error", str(exc), True, CLOSE_INTERNAL)
            await self._conclude("error", lambda: [failure], CLOSE_INTERNAL, "internal error")
        if self._concluding:
            await self._concluded.wait()

    async def shutdown(self, compute_budget_s: float) -> None:
        """Server stopping: last final (reason shutdown; a session already stopping keeps `stop`), close 1001.

        The peer gets close_timeout in all from now (a send already waiting on it is cut to that too);
        computing the final is not the peer's wait and has its own budget.
        """
        self.peer.limit_wait(self.settings.close_timeout_s)
        self.driver.finish("shutdown")
        try:
            await asyncio.wait_for(self.driver.wait_done(), compute_budget_s)
        except TimeoutError:
            self.driver.cancel()
        await self._conclude(
            "shutdown",
            lambda: [Failure("shutting_down", "server is shutting down", True, CLOSE_GOING_AWAY)],
            CLOSE_GOING_AWAY,
            "shutting down",
        )
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    def abort(self) -> None:
        """Past every deadline: drop the TCP connection and the pump."""
        self.driver.cancel()
        self.peer.abort()
        self.peer.mark_dead("disconnect")

    def _on_driver_failure(self) -> None:
        """Recognition failed (internal_error already sent): close 1011 without waiting for the reader."""
        task = self.loop.create_task(self._conclude("error", list, CLOSE_INTERNAL, "internal error"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- reader
    def _deadline(self) -> tuple[float, str]:
        idle = min(self.last_in, self.last_pong) + self.idle_timeout_s
        if self.driver.started:
            return idle, "idle"
        start = self.opened + self.settings.start_timeout_s
        return (start, "start") if start <= idle else (idle, "idle")

    def _touch(self) -> None:
        """We were not reading: the client's clocks start again now."""
        now = self.loop.time()
        self.last_in = max(self.last_in, now)
        self.last_pong = max(self.last_pong, now)

    async def _read_loop(self) -> None:
        pinger = self.loop.create_task(self._ping_loop())
        try:
            for cmd in self.codec.opening():  # a session the URL opens (Deepgram's query string)
                if await self._execute(cmd):
                    return
            while True:
                deadline, kind = self._deadline()
                wait = deadline - self.loop.time()
                if wait <= 0:
                    return await self._timed_out(kind)
                try:
                    msg = await self.ws.receive(timeout=wait)
                except TimeoutError:
                    continue
                if msg.type in _GONE:
                    if not self._concluding:  # not our own close handshake: the peer left or broke the protocol
                        if msg.type == WSMsgType.ERROR:
                            self.driver.log(logging.INFO, "protocol_error", error=repr(msg.data)[:200])
                        self.peer.mark_dead("error" if msg.type == WSMsgType.ERROR else "disconnect")
                    return
                now = self.loop.time()
                if msg.type == WSMsgType.PONG:
                    self.last_pong = now
                    continue
                if msg.type == WSMsgType.PING:  # answered, but a keepalive is not activity
                    await self.peer.send(functools.partial(self.ws.pong, msg.data))
                    continue
                self.last_in = now
                commands = (
                    self.codec.on_binary(msg.data) if msg.type == WSMsgType.BINARY else self.codec.on_text(msg.data)
                )
                for cmd in commands:
                    if await self._execute(cmd):
                        return
        finally:
            pinger.cancel()

    async def _ping_loop(self) -> None:
        interval = max(0.2, min(self.settings.ping_interval_s, self.idle_timeout_s / 4))
        while not self.peer.dead:
            await asyncio.sleep(interval)
            await self.peer.send(lambda: self.ws.ping())

    async def _timed_out(self, kind: str) -> None:
        if kind == "start":
            s = self.settings.start_timeout_s
            return await self._conclude(
                "no_start",
                lambda: [Failure("start_timeout", f"no valid 'start' within {s:g} s", True, CLOSE_START_TIMEOUT)],
                CLOSE_START_TIMEOUT,
                "start timeout",
            )
        idle = self.idle_timeout_s
        reading = self.last_pong >= self.last_in
        what = "sent nothing" if reading else "answered no ping (is it reading?)"
        if not reading:  # a client that does not read will not answer a close handshake either
            self.peer.limit_wait(min(1.0, self.settings.close_timeout_s))
        await self._conclude(
            "timeout",
            lambda: [Failure("idle_timeout", f"the client {what} for {idle:g} s", True, CLOSE_IDLE)],
            CLOSE_IDLE,
            "idle timeout",
        )

    async def _execute(self, cmd: Command) -> bool:
        """Run one command; True when the connection is over."""
        d = self.driver
        try:
            if isinstance(cmd, Audio):
                d.push(cmd.data)
                if d.backlog_seconds > self.settings.max_backlog_s:
                    await d.wait_for_room()
                    self._touch()
            elif isinstance(cmd, Start):
                await d.start(cmd)
            elif isinstance(cmd, Finalize):
                d.finalize()
            elif isinstance(cmd, Stop):
                if not d.started and cmd.require_start:
                    raise DriverError("not_started", "'stop' before 'start'")
                await self._conclude("stop", lambda: [d.closed_event()], CLOSE_NORMAL, "stop")
                return True
            elif isinstance(cmd, Answer):
                await d.wait_caught_up()
                for text in self.codec.answer():
                    await self.peer.send_text(text)
            elif isinstance(cmd, Reply):
                await self.peer.send_text(cmd.text)
            elif isinstance(cmd, Invalid):
                raise DriverError(cmd.code, cmd.message, fatal=cmd.fatal)
        except DriverError as err:
            if self.ctx.metrics is not None:
                self.ctx.metrics.errors.labels(err.code).inc()
                if err.code == "server_full":
                    self.ctx.metrics.refused.labels("capacity").inc()
            if err.fatal or self.codec.errors_fatal:
                fatal = Failure(err.code, err.message, True, err.close_code)
                await self._conclude(d.ended or "error", lambda: [fatal], err.close_code, err.code)
                return True
            self.errors += 1
            d.log(logging.INFO, "error", code=err.code, message=err.message)
            await self.deliver(Failure(err.code, err.message))
            if self.errors > MAX_NONFATAL_ERRORS:
                await self._conclude(
                    "error",
                    lambda: [
                        Failure(
                            "too_many_errors", f"more than {MAX_NONFATAL_ERRORS} protocol errors", True, CLOSE_POLICY
                        )
                    ],
                    CLOSE_POLICY,
                    "too many errors",
                )
                return True
        return False

    # ------------------------------------------------------------ conclusion
    async def _conclude(
        self, final_reason: str, last: Callable[[], list[Outgoing]], close_code: int, close_reason: str
    ) -> None:
        """Finish the session (its last final goes out first), send `last()`, close. Once per connection."""
        if self._concluding:
            await self._concluded.wait()
            return
        self._concluding = True
        try:
            self.driver.finish(final_reason)
            await self.driver.wait_done()
            self._touch()
            if self.driver.failure is not None:  # the pump already sent internal_error
                close_code, close_reason = CLOSE_INTERNAL, "internal error"
            else:
                for event in last():
                    await self.deliver(event)
            await self.peer.close(*self.codec.close_frame(close_code, close_reason))
        finally:
            self._concluded.set()

    # ----------------------------------------------------------------- sends
    async def deliver(self, event: Outgoing) -> None:
        """Render and send one event; a gone or stuck peer makes this a no-op (the driver logs finals)."""
        for text in self.codec.render(event):
            if self.peer.dead is not None:
                return
            await self.peer.send_text(text)
