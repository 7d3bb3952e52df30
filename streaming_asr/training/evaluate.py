"""Evals during fine-tuning: the model being trained, decoded exactly as `streaming-asr transcribe` decodes
a file (the offline windowing, greedy CTC, the same endpointing), scored on the normalised references."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..audio import read_audio
from ..model import CtcModel, ModelInfo
from ..offline import transcribe_offline
from ..textmetrics import corpus_cer, corpus_wer
from .dataset import Example

CACHE_BYTES = 512 << 20  # eval audio kept in memory up to this size (it is decoded at every eval)


@dataclass(frozen=True)
class EvalResult:
    wer: float
    cer: float
    hypotheses: list[str]
    seconds: float  # wall time of the eval


class Evaluator:
    """Decodes the eval set with the training model (switched to eval mode for the duration)."""

    def __init__(self, model: Any, processor: Any, info: ModelInfo, examples: Sequence[Example], device: str) -> None:
        self.model = model
        self.info = info
        self.examples = list(examples)
        self.forward = CtcModel(model, info, device=device, precision="fp32", extractor=processor)
        self._cache: dict[int, np.ndarray] = {}
        self._cache_ok = sum(e.samples for e in self.examples) * 4 <= CACHE_BYTES

    def audio(self, example: Example) -> np.ndarray:
        cached = self._cache.get(example.line)
        if cached is not None:
            return cached
        audio = read_audio(example.wav, self.info.sample_rate)[0]
        if self._cache_ok:
            self._cache[example.line] = audio
        return audio

    def __call__(self, stop: Callable[[], bool] = lambda: False) -> EvalResult | None:
        """WER and CER over the eval set; None when `stop()` turned true part-way (the eval is abandoned)."""
        started = time.monotonic()
        was_training = self.model.training
        self.model.eval()
        hypotheses: list[str] = []
        try:
            for example in self.examples:
                if stop():
                    return None
                hypotheses.append(transcribe_offline(self.forward, self.info, self.audio(example)).text)
        finally:
            self.model.train(was_training)
        refs = [e.text for e in self.examples]
        return EvalResult(
            corpus_wer(refs, hypotheses), corpus_cer(refs, hypotheses), hypotheses, time.monotonic() - started
        )
