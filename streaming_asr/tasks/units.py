"""Discrete units: per frame, the codebook entry a pre-training checkpoint's quantizer picks in each group.

The quantizer sees only the feature encoder's output, but that output depends on the whole window
(input normalisation, the first convolution's GroupNorm), so long files use the same windows as
embeddings (tasks/embed.frame_outputs); a file up to 30 s is exactly the model's own choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .embed import frame_outputs

if TYPE_CHECKING:
    from ..model.encoder import Encoder


def unit_indices(encoder: Encoder, audio: np.ndarray) -> np.ndarray:
    """Model-rate mono audio -> int64 (frames, groups): entry indices in 0 ... entries - 1."""
    return frame_outputs(audio, encoder.info, encoder.units)


def units_json(encoder: Encoder, units: np.ndarray) -> dict[str, Any]:
    """`{"frame_s", "groups", "entries", "units": [[i_1, ..., i_G], ...]}` (G and V as the checkpoint defines)."""
    return {
        "frame_s": round(encoder.info.frame_seconds, 6),
        "groups": encoder.groups,
        "entries": encoder.entries,
        "units": units.tolist(),
    }
