"""The protocol-neutral session driver: one session's life, whatever wire protocol carries it.

Codecs call `start`, `push`, `finalize` and `finish`; the driver sends `Outgoing` events through
the connection's `send` (which has its own deadline). Only the driver's pump task touches the
StreamingSession: audio and flushes queue up in an inbox the pump applies in order, so per-session
work heavier than a window cut (phrase compilation, rescoring at finals) can run on a worker thread
without racing the reader. Every accepted sample ends in a final: `finish` is idempotent (the
first reason wins) and the pump always runs the session to its last final, delivered or logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..audio import AudioFormatError, AudioInput
from ..config import ConfigError
from ..events import Final, Partial
from ..model import LanguageInput, ModelInfo, ModelInput
from ..session import StreamingSession, Window
from ..tasks.language_id import AUTO
from .language_id import Pending, language_info, session_language
from .wire import (
    CLOSE_INTERNAL,
    CLOSE_MAX_SESSION,
    CLOSE_TRY_LATER,
    Closed,
    DriverError,
    Failure,
    Outgoing,
    Ready,
    Start,
)

if TYPE_CHECKING:
    from .app import ServerContext

log = logging.getLogger("streaming_asr.server")

Send = Callable[[Outgoing], Awaitable[None]]


class SessionDriver:
    """Audio in, windows to the batcher, events out, for one connection (see module docstring)."""

    def __init__(self, ctx: ServerContext, send: Send, protocol: str = "v1") -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.send = send
        self.protocol = protocol
        self.id = secrets.token_hex(8)
        self.audio: AudioInput | None = None
        self.session: StreamingSession | None = None
        self.language: str | None = None  # an adapter checkpoint's language for this session (AUTO: detecting)
        self.pending: Pending | None = None  # `language: auto` until detected (server/language_id.py)
        self.finals = 0
        self.ended: str | None = None  # why no more audio is taken (stop, disconnect, timeout, ...)
        self.failure: Failure | None = None  # set when recognition itself failed
        self._inbox: deque[tuple[str, Any]] = deque()  # ("audio", samples) | ("finalize", _) | ("finish", reason)
        self._inbox_samples = 0
        self._work = asyncio.Event()  # something in the inbox
        self._progress = asyncio.Event()  # the backlog shrank
        self._done = asyncio.Event()  # the last final is out (or the session never started)
        self._pump: asyncio.Task[None] | None = None
        self._busy = False  # a window is being computed or its events sent
        self._arrivals: deque[tuple[float, float]] = deque(maxlen=512)  # (audio s received so far, loop time)
        self._received_s = 0.0
        self.on_failure: Callable[[], None] | None = None  # the connection closes itself (1011)
        self.use_lm = False  # finals through the server's LM (its --lm, unless the start said "lm": false)

    def log(self, level: int, event: str, **kv: Any) -> None:
        fields = " ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in kv.items())
        log.log(level, "session=%s event=%s %s", self.id, event, fields)

    @property
    def started(self) -> bool:
        return self.session is not None

    @property
    def audio_s(self) -> float:
        return round(self.audio.seconds, 3) if self.audio else 0.0

    # ---------------------------------------------------------------- start
    async def start(self, req: Start) -> None:
        """Validate, admit and open the session; DriverError says why not."""
        if self.session is not None:
            raise DriverError("already_started", "session already started; 'start' ignored")
        if self.ended is not None:
            raise DriverError("not_started", "the connection is closing")
        try:
            fmt = req.fmt.validate()
            config = self.settings.engine.with_options(req.options, self.settings.limits)
            phrases = _check_phrases(list(req.phrases), req.phrase_boost, self.settings.phrase_boost)
            language = session_language(self.ctx, req.language)
            self.use_lm = req.lm and self.settings.lm is not None
        except AudioFormatError as exc:
            raise DriverError(exc.code, str(exc)) from None
        except ConfigError as exc:
            raise DriverError("invalid_option", str(exc)) from None
        info = await language_info(self.ctx, language)  # auto: the default's until detected
        cost = self.ctx.admission.session_cost(config)
        if cost.over_limit:
            raise DriverError("invalid_option", cost.message)
        if not self.ctx.admission.admit(self.id, cost.rate):
            raise DriverError("server_full", self.ctx.admission.refusal(), fatal=True, close_code=CLOSE_TRY_LATER)
        auto = language == AUTO  # phrases are compiled for the detected language
        try:
            rescorer = None if auto else await self._compile_phrases(phrases, req.phrase_boost, info)
        except ConfigError as exc:
            self.ctx.admission.release(self.id)
            raise DriverError("invalid_option", str(exc)) from None
        except BaseException:
            self.ctx.admission.release(self.id)
            raise
        if self.ended is not None:  # the client left while the phrases compiled
            self.ctx.admission.release(self.id)
            raise DriverError("not_started", "the connection closed during start")
        self.language = language
        self.audio = AudioInput(fmt, info.sample_rate)
        self.session = StreamingSession(info, config, interim_results=req.interim_results, rescorer=rescorer)
        if auto:
            self.pending = Pending.create(self.ctx, config, req.interim_results, phrases, req.phrase_boost)
        self._pump = asyncio.get_running_loop().create_task(self._pump_loop(), name=f"pump-{self.id}")
        fields = {
            "model": info.name,
            "sample_rate": info.sample_rate,
            "input_sample_rate": fmt.sample_rate,
            "encoding": fmt.encoding,
            "channels": fmt.channels,
            "frame_s": info.frame_seconds,
            **{k: v for k, v in config.as_dict().items() if k != "max_catchup_chunks"},
            **self.ctx.compute_settings(),
            "interim_results": req.interim_results,
            "phrases": phrases,
            "language": language or self.settings.model_language,
            "lm": self.use_lm,
        }
        self.log(
            logging.INFO,
            "start",
            protocol=self.protocol,
            rate=fmt.sample_rate,
            encoding=fmt.encoding,
            channels=fmt.channels,
            chunk_s=config.chunk_s,
            phrases=len(phrases),
            cost=round(cost.rate, 4),
            **({"language": language} if language else {}),
        )
        await self.send(Ready(self.id, fields))

    def _model_input(self, win: Window) -> ModelInput:
        """The window for the batcher, tagged with the session's language when it is not the model's default."""
        adapters, inner = self.ctx.adapters, win.model_input
        if adapters is None or self.language is None or self.language == adapters.default:
            return inner
        assert not isinstance(inner, LanguageInput)  # sessions cut plain or reuse windows
        return LanguageInput(self.language, inner)

    async def _compile_phrases(self, phrases: list[str], boost: float | None, info: ModelInfo):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        boost = self.settings.phrase_boost if boost is None else boost
        if self.use_lm and self.settings.lm is not None:  # one beam search: the phrases are its hotwords
            from ..decoding.lm import shared_rescorer

            return await loop.run_in_executor(
                self.ctx.cpu_pool, shared_rescorer, info, self.settings.lm, phrases, boost
            )
        if not phrases:
            return None
        from ..phrase_rescore import PhraseRescorer

        return await loop.run_in_executor(self.ctx.cpu_pool, PhraseRescorer, info, phrases, boost)

    # ---------------------------------------------------------------- input
    def push(self, data: bytes) -> None:
        """Queue one frame of wire audio; DriverError for frames the session cannot take."""
        if self.session is None or self.audio is None:
            raise DriverError("not_started", "audio before 'start'; frame rejected")
        if self.ended is not None:  # after stop / while shutting down: the last final is already cut
            self.log(logging.DEBUG, "audio_after_end", bytes=len(data), reason=self.ended)
            return
        if len(data) > self.settings.max_message_bytes:
            raise DriverError(
                "message_too_large",
                f"binary frame of {len(data)} bytes is over the {self.settings.max_message_bytes}-byte limit; rejected",
            )
        try:
            samples = self.audio.feed(data)
        except AudioFormatError as exc:
            raise DriverError(exc.code, str(exc)) from None
        self._queue("audio", samples)
        self._received_s += samples.size / self.ctx.info.sample_rate
        self._arrivals.append((self._received_s, asyncio.get_running_loop().time()))
        if self.audio.seconds >= self.settings.max_session_s:
            self.finish("max_session")
            raise DriverError(
                "max_session",
                f"session reached the {self.settings.max_session_s:g} s limit",
                fatal=True,
                close_code=CLOSE_MAX_SESSION,
            )

    def finalize(self) -> None:
        if self.session is None:
            raise DriverError("not_started", "'finalize' before 'start'")
        if self.ended is None:
            self._queue("finalize", None)

    def finish(self, reason: str) -> None:
        """No more audio: everything accepted goes into the last final (reason: the first caller's)."""
        if self.ended is not None:
            return
        self.ended = reason
        if self.session is None or self.audio is None:
            self._done.set()
            return
        self._queue("audio", self.audio.flush())
        self._queue("finish", reason)

    def _queue(self, kind: str, item: Any) -> None:
        self._inbox.append((kind, item))
        if kind == "audio":
            self._inbox_samples += item.size
        self._work.set()

    @property
    def backlog_seconds(self) -> float:
        if self.session is None:
            return 0.0
        return self.session.backlog_seconds + self._inbox_samples / self.ctx.info.sample_rate

    async def wait_for_room(self) -> None:
        """Backpressure: return once the backlog is under the limit (the caller stops reading meanwhile)."""
        while self.backlog_seconds > self.settings.max_backlog_s and self.ended is None and not self._done.is_set():
            self._progress.clear()
            await self._progress.wait()

    async def wait_caught_up(self) -> None:
        """Until every window the audio received so far allows is computed and its events are sent."""
        while (
            self.session is not None
            and not self._done.is_set()
            and ((self._inbox and not self._holding) or self._busy or self.session.next_window_ready(1))
        ):
            self._progress.clear()
            await self._progress.wait()

    async def wait_done(self) -> None:
        """Until the last final is out (at once for a session that never started)."""
        if self.session is None:
            return
        await self._done.wait()

    def closed_event(self) -> Closed:
        return Closed(self.ended or "stop", self.audio_s, self.finals)

    def cancel(self) -> None:
        """Last resort (a shutdown past its deadline): drop the pump."""
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
        self._done.set()

    def release(self) -> None:
        self.ctx.admission.release(self.id)

    def drop(self) -> None:
        """The connection is over: let go of the session's buffers and of the connection now.

        The driver and its connection refer to each other (send, on_failure), so without this they
        would wait for the cyclic garbage collector, and a finished session's audio and cached model
        state (~20 MiB for base) with them: RSS would grow with every session until a gen-2 collection.
        """
        if self._pump is not None and not self._pump.done():
            return  # still computing the last final: the pump drops what it holds when it ends
        self.session = None
        self._inbox.clear()
        self.send = _discard
        self.on_failure = None

    # ----------------------------------------------------------------- pump
    @property
    def _holding(self) -> bool:
        """An auto session waiting for more audio before it detects: nothing to compute yet."""
        return self.pending is not None and not self.pending.ready(self._inbox)

    async def _pump_loop(self) -> None:
        try:
            if self.pending is not None:
                await self._detect_language()
            await self._pump_windows()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the reader and shutdown must not wait forever
            self.log(logging.ERROR, "internal_error", error=repr(exc))
            log.exception("session %s: recognition failed", self.id)
            self.ended = self.ended or "error"
            self.failure = Failure("internal_error", f"recognition failed: {exc}", True, CLOSE_INTERNAL)
            await self.send(self.failure)
            if self.on_failure is not None:
                self.on_failure()
        finally:
            self._done.set()
            self._progress.set()

    async def _detect_language(self) -> None:
        """Hold the audio until the LID window is in (or the stream ends), detect, then decode all of
        it from sample 0 in that language; the `language` event goes out first (server/language_id.py)."""
        pending = self.pending
        assert pending is not None
        while not pending.ready(self._inbox):
            self._progress.set()
            self._work.clear()
            await self._work.wait()
        found, self.session = await pending.open(self.ctx, pending.audio(self._inbox), self._compile_phrases)
        self.language, self.pending = found.language, None
        self.log(logging.INFO, "language", **asdict(found))
        await self.send(found)

    def _apply_inbox(self) -> None:
        session = self.session
        assert session is not None
        pieces: list[np.ndarray] = []
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "audio":
                pieces.append(item)
                continue
            if pieces:
                session.push(np.concatenate(pieces))
                pieces = []
            session.finalize("finalize") if kind == "finalize" else session.finish(item)
        if pieces:
            session.push(np.concatenate(pieces) if len(pieces) > 1 else pieces[0])
        self._inbox_samples = 0

    async def _pump_windows(self) -> None:
        session = self.session
        assert session is not None
        batcher = self.ctx.batcher
        loop = asyncio.get_running_loop()
        chunk = session.config.chunk_s
        heavy = session.rescorer is not None  # phrase rescoring at finals: off the event loop
        while True:
            self._apply_inbox()
            catch_up = session.geo.max_catchup if session.backlog_seconds > 3 * chunk else 1
            win = session.next_window(catch_up)
            if win is None:
                await self._flush_events()
                if self.ended is not None and not self._inbox and not session.flushing:
                    break
                self._progress.set()
                self._work.clear()
                if self._inbox or session.next_window_ready(catch_up):
                    continue
                await self._work.wait()
                continue
            self._busy = True
            output = await batcher.infer(self._model_input(win))
            if heavy:
                await loop.run_in_executor(self.ctx.cpu_pool, session.accept, win, output)
            else:
                session.accept(win, output)
            await self._flush_events()
            self._busy = False
            self._progress.set()
        await self._flush_events()

    async def _flush_events(self) -> None:
        assert self.session is not None
        for ev in self.session.pop_events():
            if isinstance(ev, Final):
                self.finals += 1
                self.log(
                    logging.INFO,
                    "final",
                    segment=ev.segment,
                    reason=ev.reason,
                    start=round(ev.start, 2),
                    end=round(ev.end, 2),
                    words=len(ev.words),
                    text=ev.text,
                )
            elif isinstance(ev, Partial) and self.ended in ("disconnect", "slow_consumer"):
                continue
            if isinstance(ev, Final) and ev.reason == self.ended and not self._inbox:
                # the session's last final says how much audio was accepted: a reconnecting client resends the rest
                ev = replace(ev, extra={**ev.extra, "audio_s": self.audio_s})
            self._observe_delay(ev)
            await self.send(ev)

    def _observe_delay(self, ev: Partial | Final) -> None:
        """Metrics: from receiving the audio up to the event's end to sending the event."""
        metrics = self.ctx.metrics
        if metrics is None or not self._arrivals:
            return
        received = next((t for s, t in self._arrivals if s >= ev.end - 1e-6), self._arrivals[-1][1])
        delay = max(0.0, asyncio.get_running_loop().time() - received)
        (metrics.partial_delay if isinstance(ev, Partial) else metrics.final_delay).observe(delay)


async def _discard(event: Outgoing) -> None:
    """Where a dropped driver's events go."""


def _check_phrases(phrases: list[str], boost: float | None, default_boost: float | None) -> list[str]:
    """The phrase list and boost within the documented limits (ConfigError otherwise)."""
    from ..phrase_rescore import check_boost, check_phrases

    check_boost(boost)
    check_boost(default_boost)
    return check_phrases(phrases)
