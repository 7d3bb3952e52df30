"""The batcher's two priorities: live windows first; uploads' background windows on a lane of their
own (one thread at the lowest CPU priority), one batch at a time, never holding a live worker.

Forwards here are plain functions gated by events, so the order is the scheduler's, not timing's.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

import numpy as np
import pytest

from streaming_asr.batcher import Batcher


class Recording(Batcher):
    """Records each batch as the scheduler takes it (window lengths tell requests apart)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.taken: list[tuple[bool, list[int]]] = []

    def _take_batch(self, background: bool) -> list[Any]:
        batch = super()._take_batch(background)
        if batch:
            self.taken.append((background, [len(r.item) for r in batch]))
        return batch


def window(n: int) -> np.ndarray:
    return np.zeros(n, np.float32)


async def test_live_windows_are_taken_before_background_ones() -> None:
    gate, started = threading.Event(), threading.Event()

    def forward(items: Any) -> list[Any]:
        if len(items[0]) == 100:
            started.set()
            assert gate.wait(30)
        return [len(x) for x in items]

    batcher = Recording(forward, max_batch=8, max_wait_s=0, workers=1)
    batcher.start()
    try:
        futures = [asyncio.ensure_future(batcher.infer(window(100)))]
        while not started.is_set():
            await asyncio.sleep(0.01)
        futures += [asyncio.ensure_future(batcher.infer(window(n), background=True)) for n in (200, 300, 200)]
        futures += [asyncio.ensure_future(batcher.infer(window(n))) for n in (400, 500)]
        while batcher.queue_depth < 5:
            await asyncio.sleep(0.01)
        gate.set()
        assert await asyncio.gather(*futures) == [100, 200, 300, 200, 400, 500]
    finally:
        gate.set()
        await batcher.close()
    # live first (FIFO by length), then the background ones, batched by length, one batch at a time
    assert batcher.taken == [(False, [100]), (False, [400]), (False, [500]), (True, [200, 200]), (True, [300])]


async def test_a_computing_upload_window_holds_no_live_worker() -> None:
    """One worker: while a background forward is stuck, a live window still runs, and a second
    background batch waits for the first."""
    gate, started = threading.Event(), threading.Event()

    def forward(items: Any) -> list[Any]:
        if len(items[0]) == 200:
            started.set()
            assert gate.wait(30)
        return [len(x) for x in items]

    batcher = Recording(forward, max_batch=8, max_wait_s=0, workers=1)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.infer(window(200), background=True))
        while not started.is_set():
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(batcher.infer(window(300), background=True))
        assert await batcher.infer(window(400)) == 400  # the live worker was free
        assert batcher.taken == [(True, [200]), (False, [400])] and batcher.queue_depth == 1
        gate.set()
        assert await asyncio.gather(first, second) == [200, 300]
    finally:
        gate.set()
        await batcher.close()
    assert batcher.taken[-1] == (True, [300])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
async def test_background_forwards_run_at_the_lowest_cpu_priority() -> None:
    seen: dict[bool, int] = {}

    def forward(items: Any) -> list[Any]:
        seen[len(items[0]) == 200] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return [0 for _ in items]

    batcher = Batcher(forward, max_wait_s=0, workers=1)
    batcher.start()
    try:
        await batcher.infer(window(200), background=True)
        await batcher.infer(window(100))
    finally:
        await batcher.close()
    assert seen[True] == 19 and seen[False] == os.getpriority(os.PRIO_PROCESS, 0)
