"""Serving memory: bounded per-thread kernel caches, heap trimming, finished sessions holding nothing big."""

from __future__ import annotations

import ctypes.util
import sys

import numpy as np
import pytest
from helpers import tiny_model

from streaming_asr.config import SERVE_DEFAULT
from streaming_asr.model import CtcModel, tiny_config
from streaming_asr.model.runtime import KERNEL_CACHE_CAPACITY, HeapTrimmer, bound_kernel_caches
from streaming_asr.session import StreamingSession


@pytest.mark.parametrize(
    "given, expected",
    [
        (None, str(KERNEL_CACHE_CAPACITY)),
        ("", str(KERNEL_CACHE_CAPACITY)),
        ("0", str(KERNEL_CACHE_CAPACITY)),
        ("x", str(KERNEL_CACHE_CAPACITY)),
        ("256", "256"),
    ],
)
def test_kernel_cache_capacity_is_set_unless_validly_given(
    monkeypatch: pytest.MonkeyPatch, given: str | None, expected: str
) -> None:
    # 0 or an empty LRU_CACHE_CAPACITY crashes torch's oneDNN convolutions (segfault): never left in place
    if given is None:
        monkeypatch.delenv("LRU_CACHE_CAPACITY", raising=False)
    else:
        monkeypatch.setenv("LRU_CACHE_CAPACITY", given)
    bound_kernel_caches()
    assert __import__("os").environ["LRU_CACHE_CAPACITY"] == expected


def test_a_model_bounds_the_kernel_caches_before_its_first_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LRU_CACHE_CAPACITY", raising=False)
    CtcModel.from_config(tiny_config())
    assert __import__("os").environ["LRU_CACHE_CAPACITY"] == str(KERNEL_CACHE_CAPACITY)


def test_heap_trimmer_is_rate_limited_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not HeapTrimmer(interval_s=3600).maybe_trim()  # not due: the interval counts from construction
    assert not HeapTrimmer(interval_s=0).maybe_trim()  # off
    monkeypatch.setenv("STREAMING_ASR_MALLOC_TRIM_S", "0")
    assert HeapTrimmer().interval_s == 0 and not HeapTrimmer().maybe_trim()
    monkeypatch.setenv("STREAMING_ASR_MALLOC_TRIM_S", "nonsense")
    assert HeapTrimmer().interval_s > 0
    if sys.platform.startswith("linux") and ctypes.util.find_library("c"):
        trimmer = HeapTrimmer(interval_s=1e-9)
        if trimmer._trim is not None:  # glibc
            assert trimmer.maybe_trim() and trimmer.trims == 1


def test_a_finished_session_releases_its_audio_and_model_state() -> None:
    model = tiny_model()
    session = StreamingSession(model.info, SERVE_DEFAULT)
    audio = (np.random.default_rng(0).standard_normal(16000 * 3) * 0.1).astype(np.float32)
    for k in range(0, audio.size, 1600):
        session.push(audio[k : k + 1600])
        session.run(model)
    assert session._cache is not None and session.buffered_samples > 0
    session.finish()
    assert session._cache is not None  # the flush window still needs it
    events = session.run(model)
    assert events[-1].reason == "stop"
    assert session._cache is None and session._ahead is None and session.buffered_samples == 0
    assert session.next_window() is None and session.run(model) == []
