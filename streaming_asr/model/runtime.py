"""How the model process runs: workers x torch threads (measured on 2 cores in bench/kernels.py), allocator,
kernel caches.

On CPU, small reuse windows leave intra-op threads idle between short kernels, so two workers
with half the threads each get more windows through than one worker with all of them (about 1.3x
on 2 cores, bench/kernels.py). `auto` therefore gives CPUs 2 workers of cores/2 threads (at
least 1); on more cores the same split keeps batches large while each forward still uses several
cores. CUDA gets 1 worker: one stream of kernels keeps the GPU busy, batching does the rest.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    threads: int  # torch intra-op threads per worker (CPU)


def plan_workers(
    device: str, workers: int | None = None, threads: int | None = None, cores: int | None = None
) -> WorkerPlan:
    """Resolve `--model-workers` / `--threads` (None = auto) for `device`."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.startswith("cuda"):
        return WorkerPlan(workers or 1, threads or max(1, cores))
    workers = workers or (2 if cores >= 2 else 1)
    return WorkerPlan(workers, threads or max(1, cores // workers))


def set_torch_threads(threads: int) -> None:
    """Run in each model worker thread before its first forward (torch's thread count is per thread)."""
    import torch

    torch.set_num_threads(threads)


def tune_allocator(mmap_threshold: int = 1 << 20, arenas: int = 2) -> bool:
    """Make glibc return freed tensor memory instead of keeping it (serving processes; Linux only).

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after which
    tensors of a few MiB (a session's key/value cache is ~10 MiB) come from per-thread heaps that
    fragment and are never returned: a server's RSS then grows with every distinct window shape
    and every model thread. A fixed 1 MiB threshold keeps those tensors mmapped (returned on
    free) while small activations stay on the heap (mmap's page faults would slow them down), and
    few arenas bound the heaps.
    Returns False where this is not glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_mmap_threshold, m_arena_max = -3, -8
    return bool(mallopt(m_mmap_threshold, mmap_threshold)) and bool(mallopt(m_arena_max, arenas))


KERNEL_CACHE_CAPACITY = 64
"""Entries in each thread's oneDNN convolution cache (PyTorch's ideep LRU; its default is 1024)."""

TRIM_INTERVAL_S = 30.0
"""Least seconds between two heap trims after forwards (env STREAMING_ASR_MALLOC_TRIM_S; 0: never)."""


def bound_kernel_caches(capacity: int = KERNEL_CACHE_CAPACITY) -> None:
    """Cap the per-thread cache of oneDNN convolution primitives that PyTorch keeps on CPU.

    PyTorch's oneDNN glue (ideep) keeps, in every thread that runs a convolution, an LRU cache of
    primitives keyed by input shape, 1024 entries by default. A flush window (end of stream,
    `finalize`) has an arbitrary length, so nearly every session adds new entries (~12 for the
    stand-in) to each model thread's cache, and a server's RSS grows with every session until
    those caches are full. A small per-thread cache costs nothing measurable: a miss is served
    from oneDNN's global primitive cache (bounded, shared by all threads), which still holds the
    recurring window shapes, so no kernel is compiled again.
    The capacity is read from LRU_CACHE_CAPACITY when a thread first runs a convolution, so this
    must run before the model threads' first forward; a valid value already set is kept (0 or an
    empty value would crash PyTorch, so those are replaced).
    """
    value = os.environ.get("LRU_CACHE_CAPACITY", "").strip()
    if not (value.isdigit() and int(value) > 0):
        os.environ["LRU_CACHE_CAPACITY"] = str(max(1, int(capacity)))


def _libc_malloc_trim() -> Any:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS)
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """Hands freed heap memory back to the OS (glibc `malloc_trim`), at most once per `interval_s`.

    Forwards allocate and free many tensors of many sizes (every flush window has a new length)
    on several model threads; glibc keeps what they free in its heaps, fragmented, and a serving
    process's RSS keeps rising although the live memory does not. One trim (~20 ms with a few
    hundred MB of heaps) returns the free pages. `maybe_trim()` is cheap when it is not due and
    never lets two threads trim at once. A no-op where libc is not glibc.
    """

    def __init__(self, interval_s: float | None = None) -> None:
        if interval_s is None:
            try:
                interval_s = float(os.environ.get("STREAMING_ASR_MALLOC_TRIM_S", TRIM_INTERVAL_S))
            except ValueError:
                interval_s = TRIM_INTERVAL_S
        self.interval_s = interval_s
        self._trim = _libc_malloc_trim() if interval_s > 0 else None
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self.trims = 0

    def maybe_trim(self) -> bool:
        """Trim now if the interval has passed since the last trim; True if it trimmed."""
        if self._trim is None or time.monotonic() - self._last < self.interval_s:
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if time.monotonic() - self._last < self.interval_s:
                return False
            self._trim(0)
            self._last = time.monotonic()
            self.trims += 1
            return True
        finally:
            self._lock.release()
