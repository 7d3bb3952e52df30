"""How the model process runs: workers x torch threads (measured on 2 cores in bench/kernels.py), allocator.

On CPU, small reuse windows leave intra-op threads idle between short kernels, so two workers
with half the threads each get more windows through than one worker with all of them (about 1.3x
on 2 cores, bench/kernels.py). `auto` therefore gives CPUs 2 workers of cores/2 threads (at
least 1); on more cores the same split keeps batches large while each forward still uses several
cores. CUDA gets 1 worker: one stream of kernels keeps the GPU busy, batching does the rest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    threads: int  # torch intra-op threads per worker (CPU)


def plan_workers(device: str, workers: int | None = None, threads: int | None = None,
                 cores: int | None = None) -> WorkerPlan:
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
