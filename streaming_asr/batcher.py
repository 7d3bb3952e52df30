"""Cross-session batching: the only part of the package that touches threads.

Sessions `await batcher.infer(window input)`; a scheduler task collects requests from all sessions
and runs them on `workers` model threads as batched forwards. Requests are grouped by batch key
(no padding: it would change wav2vec2-base's output, see model.CtcModel). While batches compute,
new requests queue up and form the next batch, so under load batches fill by themselves; when a
worker is idle the scheduler waits at most `max_wait_s` for company before running.

Two priorities: live windows, and `background` ones (file uploads), which are taken only while no
live window waits, one batch at a time, on a lane of their own: one extra thread at the lowest CPU
priority (nice 19, Linux), so every live worker stays free for live windows and the OS gives a
background forward only the CPU that live forwards leave (a forward cannot be interrupted; this
makes it yield instead).

Several workers with fewer torch threads each beat one worker with all threads for small windows
on CPU (bench/kernels.py measures it); `thread_init` runs in each worker thread before its first
forward (the model sets its torch thread count there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from .model import ModelInput, ModelOutput, batch_key

log = logging.getLogger(__name__)

ForwardFn = Callable[[Sequence[ModelInput]], list[ModelOutput]]


@dataclass
class BatchStats:
    batches: int = 0
    windows: int = 0
    compute_s: float = 0.0

    def as_dict(self) -> dict[str, object]:
        mean = self.windows / self.batches if self.batches else 0.0
        return {
            "batches": self.batches,
            "windows": self.windows,
            "mean_batch": round(mean, 2),
            "compute_s": round(self.compute_s, 3),
        }


@dataclass
class _Request:
    item: ModelInput
    future: asyncio.Future[ModelOutput]
    queued: float = 0.0  # loop time when the request arrived
    background: bool = False  # file transcription: runs only when no live request waits


class Batcher:
    """Runs windows from many sessions through one model, batched, off the event loop."""

    def __init__(
        self,
        forward: ForwardFn,
        max_batch: int = 8,
        max_wait_s: float = 0.005,
        workers: int = 1,
        thread_init: Callable[[], None] | None = None,
    ) -> None:
        self.forward = forward
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.workers = max(1, workers)
        self.stats = BatchStats()
        self._pending: list[_Request] = []
        self._delays: deque[tuple[float, float]] = deque(maxlen=512)  # (when, seconds queued) of recent requests
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="asr-model", initializer=thread_init
        )
        self._background_executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="asr-model-bg", initializer=partial(background_thread_init, thread_init)
        )
        self._slots: asyncio.Semaphore | None = None
        self._background_busy = False
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        # (windows, seconds each waited, compute seconds, background) per forward, e.g. for metrics
        self.observer: Callable[[int, list[float], float, bool], None] | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def queue_delay_p95(self, horizon_s: float = 10.0) -> float:
        """p95 of how long requests of the last `horizon_s` waited for a model worker (0 when idle)."""
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:
            return 0.0
        recent = [d for t, d in self._delays if now - t <= horizon_s]
        # requests still waiting count with their age so far; background ones wait by design and do not count
        recent += [now - r.queued for r in self._pending if not r.background]
        recent.sort()
        return recent[int(0.95 * (len(recent) - 1))] if recent else 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for task in list(self._running):
            task.cancel()
        for req in self._pending:
            if not req.future.done():
                req.future.set_exception(RuntimeError("batcher closed"))
        self._pending.clear()
        self._executor.shutdown(wait=True)
        self._background_executor.shutdown(wait=False, cancel_futures=True)  # an upload's window: not waited for

    async def infer(self, item: ModelInput, background: bool = False) -> ModelOutput:
        """The model's output for one window's input (see model.CtcModel.__call__).

        `background` requests (file uploads) are taken only while no live request is pending, so
        uploads use the model's spare time; they batch with each other, never with live ones.
        """
        if self._task is None:
            raise RuntimeError("batcher not started")
        fut: asyncio.Future[ModelOutput] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(item, fut, asyncio.get_running_loop().time(), background))
        self._wakeup.set()
        return await fut

    async def _run(self) -> None:
        self._slots = asyncio.Semaphore(self.workers)
        loop = asyncio.get_running_loop()
        while True:
            if any(not r.background for r in self._pending):
                await self._slots.acquire()
                if len(self._pending) < self.max_batch and self.max_wait_s:
                    await asyncio.sleep(self.max_wait_s)
                batch = self._take_batch(background=False)
                if not batch:
                    self._slots.release()
                    continue
            elif self._pending and not self._background_busy:
                batch = self._take_batch(background=True)
                self._background_busy = bool(batch)
                if not batch:
                    continue
            else:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            task = loop.create_task(self._compute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _compute(self, batch: list[_Request]) -> None:
        """One batched forward on a worker thread; every waiter hears its result or the failure."""
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        now = loop.time()
        waits = [now - r.queued for r in batch]
        if not batch[0].background:  # a batch is all live or all background
            self._delays.extend((now, w) for w in waits)
        background = batch[0].background
        t0 = time.perf_counter()
        try:
            executor = self._background_executor if background else self._executor
            outs = await loop.run_in_executor(executor, self.forward, [r.item for r in batch])
        except Exception as exc:  # noqa: BLE001 - every waiter must hear about it
            log.exception("model forward failed for a batch of %d", len(batch))
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        finally:
            if background:
                self._background_busy = False
                self._wakeup.set()  # a waiting background batch may go now
            else:
                self._slots.release()
        compute_s = time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.windows += len(batch)
        self.stats.compute_s += compute_s
        if self.observer is not None:
            self.observer(len(batch), waits, compute_s, background)
        for r, out in zip(batch, outs):
            if not r.future.done():
                r.future.set_result(out)

    def _take_batch(self, background: bool) -> list[_Request]:
        """Up to max_batch requests of one priority with the oldest such request's window length
        (FIFO within a length)."""
        self._pending = [r for r in self._pending if not r.future.cancelled()]
        lead = next((r for r in self._pending if r.background == background), None)
        if lead is None:
            return []
        key = batch_key(lead.item)
        batch: list[_Request] = []
        rest: list[_Request] = []
        for r in self._pending:
            take = r.background == background and batch_key(r.item) == key and len(batch) < self.max_batch
            (batch if take else rest).append(r)
        self._pending = rest
        return batch


def background_thread_init(thread_init: Callable[[], None] | None) -> None:
    """The background lane's thread: the model's thread setup, then the lowest CPU priority."""
    if thread_init is not None:
        thread_init()
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # Linux: this thread only
    except (AttributeError, OSError):  # not Linux / not permitted: background still yields in the queue
        log.debug("background model thread keeps its CPU priority")
