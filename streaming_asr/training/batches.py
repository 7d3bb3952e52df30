"""Length-bucketed batches within a budget of audio seconds, and their tensors.

Utterances are sorted by length with a little seeded noise (so batches differ between epochs) and cut
greedily so that padded length x batch size stays within the budget; the batches are then shuffled.
Padding costs compute for nothing, so similar lengths go together. An utterance longer than the budget
is a batch of its own.

Each utterance is normalised on its own (as the feature extractor does) and zero-padded after. A
checkpoint whose feature extractor returns attention masks (layer-norm CNN) gets one; a group-norm one
(base-960h) gets none, as transformers' own fine-tuning examples do, since its CNN never saw masks. The
CTC loss counts each utterance's own frames only (`input_frames`), never the padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..audio import read_audio
from ..model import ModelInfo
from .dataset import Example

LENGTH_NOISE = 0.1  # relative jitter of the sort key


def plan_batches(lengths: Sequence[int], budget: int, seed: int, epoch: int) -> list[list[int]]:
    """Indices of `lengths` in batches whose padded size (longest x count) is at most `budget` samples.

    Deterministic in (seed, epoch): a resumed run rebuilds the epoch it stopped in.
    """
    rng = np.random.default_rng([seed, epoch])
    sizes = np.asarray(lengths, dtype=np.float64)
    keys = sizes * (1.0 + rng.uniform(-LENGTH_NOISE, LENGTH_NOISE, size=len(sizes)))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in np.argsort(keys, kind="stable").tolist():
        size = int(sizes[index])
        if current and max(longest, size) * (len(current) + 1) > budget:
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, size)
    if current:
        batches.append(current)
    order = rng.permutation(len(batches))
    return [batches[i] for i in order.tolist()]


@dataclass(frozen=True)
class Batch:
    """One forward's inputs and CTC targets, as numpy arrays (the loop moves them to the device)."""

    input_values: np.ndarray  # (batch, samples) float32, each row normalised then zero-padded
    attention_mask: np.ndarray | None  # (batch, samples) int64, or None for group-norm checkpoints
    input_frames: np.ndarray  # (batch,) int64: each row's own output frames
    targets: np.ndarray  # (sum of target lengths,) int64: the rows' labels concatenated
    target_lengths: np.ndarray  # (batch,) int64
    seconds: float  # audio in the batch, padding excluded


def read_batch(examples: Sequence[Example], info: ModelInfo, with_mask: bool) -> Batch:
    """The examples' audio read, normalised and padded into one batch."""
    audios = [info.normalize(read_audio(e.wav, info.sample_rate)[0]) for e in examples]
    return collate(audios, [e.labels for e in examples], info, with_mask)


def collate(audios: Sequence[np.ndarray], labels: Sequence[Sequence[int]], info: ModelInfo, with_mask: bool) -> Batch:
    """Normalised waveforms and their labels as one zero-padded batch."""
    lengths = [len(a) for a in audios]
    values = np.zeros((len(audios), max(lengths)), np.float32)
    mask = np.zeros(values.shape, np.int64)
    for i, (audio, n) in enumerate(zip(audios, lengths)):
        values[i, :n] = audio
        mask[i, :n] = 1
    return Batch(
        input_values=values,
        attention_mask=mask if with_mask else None,
        input_frames=np.array([info.frames_for(n) for n in lengths], np.int64),
        targets=np.array([t for row in labels for t in row], np.int64),
        target_lengths=np.array([len(row) for row in labels], np.int64),
        seconds=sum(lengths) / info.sample_rate,
    )
