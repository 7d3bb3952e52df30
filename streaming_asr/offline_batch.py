"""Offline transcription of many files with batched forwards (`transcribe --batch-size N`).

Several files' :class:`~.offline.OfflineRun` loops run side by side: each round takes every active
run's next window, groups them, runs one forward per group and hands each output back to its run.
Cutting, stitching and endpointing stay the runs' own, so each file's transcript is the one-by-one
transcript: exactly, where only equal-length windows share a forward (bucketing: group-norm
checkpoints such as base-960h, whose conv-0 GroupNorm spans the padding, so padding would change
the output); to float tolerance, where windows are zero-padded and masked (layer-norm checkpoints,
:attr:`CtcModel.supports_padding`). Transcripts come back in input order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from .config import StreamConfig
from .model import ModelInfo, ModelInput, ModelOutput, batch_key
from .offline import OfflineRun, Transcript
from .session import Window

K = TypeVar("K")

POOL_FILES = 4  # files in flight per batch slot: more chances that equal-length windows meet
POOL_SAMPLES = 16000 * 600  # beyond batch_size files, read ahead only while the pool holds less audio than this


class BatchModel(Protocol):
    """What batched offline transcription needs of a model (CtcModel is one)."""

    info: ModelInfo

    def __call__(self, windows: Sequence[ModelInput]) -> list[ModelOutput]: ...

    @property
    def supports_padding(self) -> bool: ...

    def forward_padded(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]: ...


@dataclass
class BatchStats:
    """How the windows were grouped: `forwards` model calls for `windows` windows, `padded` zero samples."""

    windows: int = 0
    forwards: int = 0
    padded: int = 0
    sizes: list[int] = field(default_factory=list)  # windows per forward, in call order


class BatchedTranscriber:
    """Transcribe files `batch_size` windows per forward; `pad=None` pads exactly when the model allows it.

    Up to POOL_FILES x batch_size files are in flight (while their audio stays under POOL_SAMPLES), so
    equal-length files that are near each other in the input share forwards even between others.
    """

    def __init__(
        self,
        model: BatchModel,
        batch_size: int,
        endpoint_silence_s: float = StreamConfig.endpoint_silence_s,
        pad: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model = model
        self.batch_size = batch_size
        self.endpoint_silence_s = endpoint_silence_s
        self.pad = model.supports_padding if pad is None else pad
        if self.pad and not model.supports_padding:
            raise ValueError("this model cannot be padded (group-norm feature encoder): batches are bucketed")
        self.stats = BatchStats()

    def transcribe(self, items: Iterable[tuple[K, np.ndarray]]) -> Iterator[tuple[K, Transcript]]:
        """(key, model-rate audio) in, (key, transcript) out in input order, each as soon as all before it are done."""
        source = iter(items)
        active: list[tuple[int, K, OfflineRun]] = []
        done: dict[int, tuple[K, Transcript]] = {}
        waiting: deque[int] = deque()  # input indices not yet yielded, in order
        exhausted = False
        count = 0
        while True:
            while not exhausted and self._room(active):
                try:
                    key, audio = next(source)
                except StopIteration:
                    exhausted = True
                    break
                index = count
                count += 1
                waiting.append(index)
                active.append((index, key, OfflineRun(self.model.info, audio, self.endpoint_silence_s)))
            if not active:
                break
            windows: list[tuple[OfflineRun, Window]] = []
            still: list[tuple[int, K, OfflineRun]] = []
            for index, key, run in active:
                win = run.next_window()
                if win is None:
                    done[index] = (key, run.transcript())
                else:
                    windows.append((run, win))
                    still.append((index, key, run))
            active = still
            self._forward(windows)
            while waiting and waiting[0] in done:
                yield done.pop(waiting.popleft())

    def _room(self, active: Sequence[tuple[int, K, OfflineRun]]) -> bool:
        if len(active) < self.batch_size:
            return True
        if self.batch_size == 1 or len(active) >= POOL_FILES * self.batch_size:
            return False
        return sum(run.session.total_samples for _, _, run in active) < POOL_SAMPLES

    def _forward(self, windows: list[tuple[OfflineRun, Window]]) -> None:
        """One forward per group of at most batch_size windows; outputs back to their runs."""
        for group in self._groups(windows):
            inputs = [win.model_input for _, win in group]
            if self.pad:
                arrays = [np.asarray(x) for x in inputs]
                outputs: Sequence[ModelOutput] = self.model.forward_padded(arrays)
                longest = max(a.size for a in arrays)
                self.stats.padded += sum(longest - a.size for a in arrays)
            else:
                outputs = self.model(inputs)
            self.stats.forwards += 1
            self.stats.windows += len(group)
            self.stats.sizes.append(len(group))
            for (run, win), out in zip(group, outputs, strict=True):
                run.accept(win, out)

    def _groups(self, windows: list[tuple[OfflineRun, Window]]) -> Iterator[list[tuple[OfflineRun, Window]]]:
        n = self.batch_size
        if self.pad:  # longest first, so each forward pads as little as it can
            ordered = sorted(windows, key=lambda rw: -len(rw[1].audio))
            for i in range(0, len(ordered), n):
                yield ordered[i : i + n]
            return
        buckets: dict[tuple[object, ...], list[tuple[OfflineRun, Window]]] = {}
        for rw in windows:
            buckets.setdefault(batch_key(rw[1].model_input), []).append(rw)
        for bucket in buckets.values():
            for i in range(0, len(bucket), n):
                yield bucket[i : i + n]


def transcribe_batch(
    model: BatchModel,
    audios: Sequence[np.ndarray],
    batch_size: int,
    endpoint_silence_s: float = StreamConfig.endpoint_silence_s,
    pad: bool | None = None,
) -> list[Transcript]:
    """Transcripts of model-rate signals, in order; equal to `transcribe_offline` of each (see module doc)."""
    runner = BatchedTranscriber(model, batch_size, endpoint_silence_s, pad)
    return [t for _, t in runner.transcribe(enumerate(audios))]
