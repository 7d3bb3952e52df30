"""Live streaming from a capture source, with reconnects that keep one continuous transcript.

:class:`LiveStreamer` owns the capture source and the sessions. It sends captured blocks as they
arrive; when the connection drops it reconnects with exponential backoff (0.5 s → 8 s) and
shifts the new session's segment numbers and times so they continue where the last session
stopped. Used by ``clients.mic`` and ``clients.commands``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .asr_client import (
    AsrClient,
    AsrError,
    AuthError,
    ConnectionLost,
    Final,
    Partial,
    ServerFullError,
    StartRejected,
    run_session_tasks,
)
from .capture import AudioBridge, Block, CaptureSource
from .output import shift_final

EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 130


class LiveStreamer:
    """Streams a :class:`~clients.capture.CaptureSource` to the server until stopped or the audio ends.

    Callbacks receive events already moved onto the streamer's continuous timeline.
    """

    def __init__(
        self,
        source: CaptureSource,
        url: str,
        *,
        token: str | None = None,
        on_partial: Callable[[Partial], None] | None = None,
        on_final: Callable[[Final], None] | None = None,
        on_message: Callable[[str], None] | None = None,
        on_block: Callable[[Block], None] | None = None,
        max_blocks: int = 200,
        backoff: tuple[float, float] = (0.5, 8.0),
        stop_timeout_s: float = 15.0,
        **client_options: Any,
    ) -> None:
        self.source = source
        self.url = url
        self.token = token
        self.on_partial = on_partial or (lambda p: None)
        self.on_final = on_final or (lambda f: None)
        self.on_message = on_message or (lambda m: None)
        self.on_block = on_block
        self.max_blocks = max_blocks
        self.backoff = backoff
        self.stop_timeout_s = stop_timeout_s
        self.client_options = client_options
        self.bridge: AudioBridge | None = None
        self.finals: list[Final] = []
        self.sessions = 0
        self._next_segment = 0
        self._segment_base = 0
        self._time_base = 0.0
        self._audio_over = False  # stop (or end of file) already sent
        self._stop_requested: asyncio.Event | None = None
        self._task: asyncio.Task[Any] | None = None
        self._aborted = False
        self._reported_drops = 0

    # -- control (call from the event loop, e.g. a signal handler)

    def request_stop(self) -> None:
        """Stop capturing, send ``stop`` and finish once the last final has arrived."""
        if self._stop_requested is None or self._stop_requested.is_set():
            return
        self._stop_requested.set()
        self.source.close()
        if self.bridge is not None:
            self.bridge.queue.put_nowait(None)  # after any queued audio, which is still sent
        asyncio.get_running_loop().call_later(self.stop_timeout_s, self.abort)

    def abort(self) -> None:
        """Quit at once (second Ctrl-C, or the server never answered ``stop``)."""
        self._aborted = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    @property
    def stopping(self) -> bool:
        return self._stop_requested is not None and self._stop_requested.is_set()

    # -- running

    async def run(self) -> int:
        """Capture and stream until stopped; returns a process exit code."""
        self._task = asyncio.current_task()
        self._stop_requested = asyncio.Event()
        self.bridge = AudioBridge(asyncio.get_running_loop(), self.max_blocks)
        self.bridge.on_block = self.on_block
        self.source.start(self.bridge.callback, self.bridge.end)
        try:
            return await self._run_sessions()
        except asyncio.CancelledError:
            if self._aborted:
                return EXIT_INTERRUPTED
            raise
        finally:
            self.source.close()

    async def _run_sessions(self) -> int:
        delay = self.backoff[0]
        while True:
            try:
                async with AsrClient(
                    self.url,
                    sample_rate=self.source.sample_rate,
                    channels=self.source.channels,
                    token=self.token,
                    **self.client_options,
                ) as client:
                    self.sessions += 1
                    delay = self.backoff[0]
                    lost = await self._session(client)
            except (AuthError, StartRejected) as exc:
                self.on_message(f"error: {exc}")
                return EXIT_REFUSED
            except AsrError as exc:
                if self.sessions == 0 and not isinstance(exc, ServerFullError):
                    self.on_message(f"error: {exc}")
                    return EXIT_ERROR
                lost = str(exc)
            if lost is None:
                return EXIT_OK
            if self._audio_over or self.stopping:
                self.on_message(f"{lost}; the last segment may be missing")
                return EXIT_ERROR
            self.on_message(f"{lost}; reconnecting in {delay:.1f} s")
            try:
                await asyncio.wait_for(self._stop_requested.wait(), timeout=delay)  # type: ignore[union-attr]
                return EXIT_OK  # stopped while disconnected
            except TimeoutError:
                pass
            delay = min(delay * 2, self.backoff[1])

    async def _session(self, client: AsrClient) -> str | None:
        """Run one session; ``None`` when it ended normally, else why it was lost."""
        self._segment_base = self._next_segment
        self._time_base = -1.0
        try:
            await run_session_tasks(self._send(client), self._receive(client))
        except ConnectionLost as exc:
            return f"{client.fatal_error.code}: {client.fatal_error.message}" if client.fatal_error else str(exc)
        finally:
            self.on_partial(Partial(self._next_segment, "", 0))  # clear a pending partial
        if client.closed is not None:
            return None
        if client.fatal_error is not None:
            return f"server ended the session ({client.fatal_error.code}: {client.fatal_error.message})"
        return "connection closed"

    async def _send(self, client: AsrClient) -> None:
        assert self.bridge is not None
        rate = self.source.sample_rate
        while True:
            block = await self.bridge.queue.get()
            if block is None:
                self._audio_over = True
                await client.stop()
                return
            if self._time_base < 0:
                self._time_base = block.start_frame / rate
            await client.send_audio(block.data)
            if self.bridge.dropped_blocks > self._reported_drops:
                self.on_message(
                    f"warning: {self.bridge.dropped_blocks} audio blocks dropped so far (sending fell behind capture)"
                )
                self._reported_drops = self.bridge.dropped_blocks

    async def _receive(self, client: AsrClient) -> None:
        async for event in client:
            if isinstance(event, Partial):
                self.on_partial(
                    Partial(
                        event.segment + self._segment_base,
                        event.text,
                        event.stable,
                        event.end + max(self._time_base, 0.0),
                    )
                )
            elif isinstance(event, Final):
                final = shift_final(event, self._segment_base, max(self._time_base, 0.0))
                self._next_segment = max(self._next_segment, final.segment + 1)
                self.finals.append(final)
                self.on_final(final)
