"""Opt-in reconnect for a long stream: when the server goes away (close 1001 / 1012 / 1013, a
`shutting_down` or `server_full` error, or a lost network), connect again with backoff, send `start`
again and go on, so a replica restart behind a load balancer costs a session boundary (a final),
not audio.

Nothing falls between two sessions: the audio is kept from the last point the server has
accounted for, and the next session starts from there. A session's last final carries `audio_s`
(all audio it accepted, also on shutdown), other finals cover audio up to their `end`; after a
network loss the rest is sent again (a little audio may be recognised twice, none is lost).
Times of finals are shifted to the stream's clock, across sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable
from dataclasses import replace

from .asr_client import (
    _SAMPLE_BYTES,
    AsrClient,
    Closed,
    ConnectError,
    ConnectionLost,
    Error,
    Event,
    Final,
    ServerFullError,
    Word,
)

RETRY_CLOSE_CODES = (1001, 1012, 1013)
RETRY_ERRORS = ("shutting_down", "server_full")


class ReconnectingStream:
    """Stream `chunks` through as many sessions as it takes; `run()` returns every final."""

    def __init__(
        self,
        make_client: Callable[[], AsrClient],
        retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.make_client, self.retries, self.on_event = make_client, retries, on_event
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.finals: list[Final] = []
        self.sessions: list[float] = []  # audio_s each session accepted (as its last final or `closed` said)
        self._buffer = bytearray()  # audio from `_buffer_start_s` on: sent or not, not yet accounted for
        self._buffer_start_s = 0.0
        self._source_done = False

    async def run(self, chunks: AsyncIterable[bytes]) -> list[Final]:
        # one task reads the source for all sessions: cancelling a session never breaks the caller's iterator
        source: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)
        reader = asyncio.ensure_future(self._pull(chunks, source))
        try:
            return await self._sessions(source)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    @staticmethod
    async def _pull(chunks: AsyncIterable[bytes], queue: asyncio.Queue[bytes | None]) -> None:
        async for chunk in chunks:
            await queue.put(chunk)
        await queue.put(None)

    async def _sessions(self, source: asyncio.Queue[bytes | None]) -> list[Final]:
        failures = 0
        while True:
            client = self.make_client()
            self._frame = client.channels * _SAMPLE_BYTES[client.encoding]
            self._bytes_per_s = client.sample_rate * self._frame
            try:
                await client.connect()
            except (ConnectError, ServerFullError):
                failures += 1
                if failures > self.retries:
                    raise
                await asyncio.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1)))
                continue
            failures = 0
            try:
                if await self._session(client, source):
                    return self.finals
            finally:
                await client.aclose()

    async def _session(self, client: AsrClient, source: asyncio.Queue[bytes | None]) -> bool:
        """One session; True when the stream is done, False to reconnect (anything else is raised)."""
        offset = self._buffer_start_s
        sender = asyncio.ensure_future(self._send(client, source))
        try:
            async for event in client:
                if isinstance(event, Final):
                    self._accept(event, offset)
                elif isinstance(event, Closed):
                    return True
                elif self.on_event is not None and not isinstance(event, Error):
                    self.on_event(event)
        except ConnectionLost as exc:
            if exc.code is not None and exc.code not in RETRY_CLOSE_CODES:
                raise
            return False  # the network went, or the server is going: reconnect
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        error = client.fatal_error
        if error is None or error.code in RETRY_ERRORS or client.close_code in RETRY_CLOSE_CODES:
            return False
        raise ConnectionLost(f"{error.code}: {error.message}")

    async def _send(self, client: AsrClient, source: asyncio.Queue[bytes | None]) -> None:
        if self._buffer:
            await client.send_audio(bytes(self._buffer))  # what the last session did not account for
        while not self._source_done:
            chunk = await source.get()
            if chunk is None:
                self._source_done = True
                break
            self._buffer += chunk  # kept before sending: a chunk the connection loses is sent again
            await client.send_audio(chunk)
        await client.stop()

    def _accept(self, final: Final, offset: float) -> None:
        shifted = replace(
            final,
            start=final.start + offset,
            end=final.end + offset,
            words=tuple(Word(w.word, w.start + offset, w.end + offset, w.confidence) for w in final.words),
        )
        self.finals.append(shifted)
        if self.on_event is not None:
            self.on_event(shifted)
        covered = final.audio_s if final.audio_s is not None else final.end
        if final.audio_s is not None:
            self.sessions.append(final.audio_s)
        self._drop_until(offset + covered)

    def _drop_until(self, stream_s: float) -> None:
        """Forget audio the server has accounted for (whole sample frames)."""
        drop = int((stream_s - self._buffer_start_s) * self._bytes_per_s)
        drop = max(0, min(len(self._buffer), drop - drop % self._frame))
        del self._buffer[:drop]
        self._buffer_start_s += drop / self._bytes_per_s
