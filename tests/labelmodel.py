"""A frame-local stand-in for the encoder: each output frame reads the label written into its own samples.

It goes through the same `forward(windows)` interface as the real model. Because frame t's output
depends only on samples [t*320, t*320+400), any correct windowing + stitching must reproduce the
offline frame sequence exactly; the real encoder is not frame-local, so this isolates the stitcher.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streaming_asr.model import ModelInfo, default_vocab

INFO = ModelInfo(
    name="labels",
    vocab=default_vocab(32),
    blank_id=0,
    delimiter_id=4,
    sample_rate=16000,
    conv_kernels=(10, 3, 3, 3, 3, 2, 2),
    conv_strides=(5, 2, 2, 2, 2, 2, 2),
    do_normalize=False,
)
IDS = {c: i for i, c in enumerate(INFO.vocab)}
SCALE = 1 / 64


def label_audio(labels: str | Sequence[int]) -> np.ndarray:
    """Samples whose frame t carries label t ('_' blank, ' ' delimiter)."""
    ids = (
        [IDS["<pad>"] if c == "_" else IDS["|"] if c == " " else IDS[c] for c in labels]
        if isinstance(labels, str)
        else list(labels)
    )
    audio = np.zeros(INFO.samples_for(len(ids)), dtype=np.float32)
    for t, i in enumerate(ids):
        audio[t * 320 + 200] = i * SCALE
    return audio


def label_forward(windows: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for w in windows:
        n = INFO.frames_for(len(w))
        ids = np.rint(w[np.arange(n) * 320 + 200] / SCALE).astype(int)
        logp = np.full((n, 32), np.log(1e-4), dtype=np.float32)
        logp[np.arange(n), ids] = np.log(1 - 31e-4)
        out.append(logp)
    return out
