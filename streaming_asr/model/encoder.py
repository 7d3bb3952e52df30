"""A checkpoint's encoder for outputs other than CTC text: hidden states per layer, codebook (quantizer)
indices, audio-classification logits.

One window of normalised audio in, numpy out, under `torch.inference_mode()`. Loaded checkpoints run in
fp32 (the exact reference); the server's embeddings come from its serving CTC model at that model's
precision (`from_ctc`). Windowing long files is the caller's (streaming_asr/chunking.py via tasks/).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from .checkpoint import load_pretrained
from .info import ModelInfo, ModelLoadError

TASK_CLASSES = {
    "embed": "AutoModel",  # a CTC, pre-training or classification checkpoint gives its base encoder
    "units": "AutoModelForPreTraining",
    "classify": "AutoModelForAudioClassification",
}
CODEBOOK_HINT = (
    "discrete units need a checkpoint with a quantizer (codebook): a wav2vec2 pre-training checkpoint "
    "(Wav2Vec2ForPreTraining), e.g. facebook/wav2vec2-base or facebook/wav2vec2-large-xlsr-53 before "
    "fine-tuning; fine-tuned CTC checkpoints (such as wav2vec2-base-960h) and HuBERT/WavLM have none"
)
CLASSIFIER_HINT = (
    "audio classification needs an AutoModelForAudioClassification checkpoint (...ForSequenceClassification), "
    "e.g. facebook/mms-lid-126 or superb/wav2vec2-base-superb-er"
)


class Encoder:
    """A loaded checkpoint's encoder (`base`) and, where it has them, its quantizer and classification head."""

    def __init__(
        self, model: Any, info: ModelInfo, device: str = "cpu", dtype: Any = None, precision: str = "fp32"
    ) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.base: Any = model.base_model  # the model itself for a bare encoder
        self.config: Any = model.config
        self.info = info
        self.device = device
        self.dtype = torch.float32 if dtype is None else dtype
        self.precision = precision

    @classmethod
    def load(cls, name: str, task: str = "embed", device: str = "auto", threads: int | None = None) -> Encoder:
        """`name` (hub id or directory) for `task` (embed, units, classify), in fp32 on `device`.

        Raises ModelLoadError when the checkpoint lacks what the task needs (no codebook, no
        classification head), rather than running a randomly initialised head.
        """
        import torch

        if task not in TASK_CLASSES:
            raise ValueError(f"unknown task {task!r}")
        if threads:
            torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            with _heads_left_out_quietly(task == "embed"):
                model, extractor = load_pretrained(name, TASK_CLASSES[task], "AutoFeatureExtractor")
        except ModelLoadError as exc:
            if task == "units" and "cannot be loaded as" in str(exc):
                raise ModelLoadError(f"{exc}; {CODEBOOK_HINT}") from exc
            raise
        _check_head(name, model, task)
        info = geometry(model.config, extractor, name)
        return cls(model.eval().to(device), info, device=device)

    @classmethod
    def from_ctc(cls, ctc: Any) -> Encoder:
        """The encoder of a loaded CtcModel, sharing its weights, device and precision (the server's model)."""
        return cls(ctc.model, ctc.info, device=ctc.device, dtype=ctc.dtype, precision=ctc.precision)

    # ------------------------------------------------------------------ facts
    @property
    def num_layers(self) -> int:
        """Transformer layers: hidden_states has num_layers + 1 entries (0 = the transformer's input)."""
        return int(self.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def has_codebook(self) -> bool:
        return getattr(self.model, "quantizer", None) is not None

    @property
    def groups(self) -> int:
        return int(self.config.num_codevector_groups)

    @property
    def entries(self) -> int:
        return int(self.config.num_codevectors_per_group)

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names by index, from the checkpoint's id2label."""
        id2label = {int(k): str(v) for k, v in (self.config.id2label or {}).items()}
        return tuple(id2label.get(i, f"LABEL_{i}") for i in range(int(self.config.num_labels)))

    # --------------------------------------------------------------- forwards
    def _input(self, audio: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)[None]).to(self.device, self.dtype)

    def hidden_states(self, audio: np.ndarray, layers: Sequence[int]) -> np.ndarray:
        """(len(layers), frames, hidden) of one window: transformers' `hidden_states[i]` for each i."""
        with self.torch.inference_mode():
            out = self.base(self._input(audio), output_hidden_states=True)
            stacked = self.torch.stack([out.hidden_states[i][0] for i in layers]).float()
        result: np.ndarray = stacked.cpu().numpy()
        return result

    def units(self, audio: np.ndarray) -> np.ndarray:
        """(frames, groups) codebook indices of one window: the argmax of the quantizer's weight_proj
        logits per group over the feature encoder's layer-normed output (what the quantizer takes as
        `extract_features`; its eval-mode hard choice). The transformer is not run."""
        if not self.has_codebook:
            raise ModelLoadError(f"{self.info.name!r} has no quantizer; {CODEBOOK_HINT}")
        with self.torch.inference_mode():
            features = self.base.feature_extractor(self._input(audio)).transpose(1, 2)
            normed = self.base.feature_projection.layer_norm(features)
            logits = self.model.quantizer.weight_proj(normed)[0]
            idx = logits.view(logits.shape[0], self.groups, self.entries).argmax(dim=-1)
        result: np.ndarray = idx.cpu().numpy().astype(np.int64)
        return result

    def head_frames(self, audio: np.ndarray) -> np.ndarray:
        """(frames, projector size) of one window: the classification head's per-frame projection
        (hidden states, or their learned weighted sum, through `projector`), before the mean pool."""
        torch = self.torch
        weighted = bool(getattr(self.config, "use_weighted_layer_sum", False))
        with torch.inference_mode():
            out = self.base(self._input(audio), output_hidden_states=weighted)
            if weighted:
                stacked = torch.stack(out.hidden_states, dim=1)
                weights = torch.softmax(self.model.layer_weights, dim=-1)
                hidden = (stacked * weights.view(-1, 1, 1)).sum(dim=1)
            else:
                hidden = out.last_hidden_state
            projected = self.model.projector(hidden)[0].float()
        result: np.ndarray = projected.cpu().numpy()
        return result

    def classify_pooled(self, pooled: np.ndarray) -> np.ndarray:
        """(labels,) logits of the classifier applied to a pooled projection (the head's last layer)."""
        with self.torch.inference_mode():
            logits = self.model.classifier(self._input(pooled))[0].float()
        result: np.ndarray = logits.cpu().numpy()
        return result


def geometry(config: Any, extractor: Any, name: str) -> ModelInfo:
    """Frame geometry and normalisation of a wav2vec2-family checkpoint (no vocabulary: not for CTC)."""
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if not kernels or not strides:
        raise ModelLoadError(
            f"{name!r} ({type(config).__name__}) is not a wav2vec2-family checkpoint (raw waveform in, "
            "convolutional feature encoder): it has no conv_kernel/conv_stride"
        )
    return ModelInfo(
        name=name,
        vocab=(),
        blank_id=-1,
        delimiter_id=-1,
        sample_rate=int(getattr(extractor, "sampling_rate", 16000)),
        conv_kernels=tuple(kernels),
        conv_strides=tuple(strides),
        do_normalize=bool(getattr(extractor, "do_normalize", True)),
    )


class _NoUnexpectedOnlyReport(logging.Filter):
    """Drops transformers' load report when it lists only UNEXPECTED keys: the encoder of a CTC or
    classification checkpoint leaves its head out on purpose. A report with MISSING keys still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return "LOAD REPORT" not in text or "MISSING" in text


@contextmanager
def _heads_left_out_quietly(active: bool) -> Iterator[None]:
    logger = logging.getLogger("transformers.modeling_utils")
    quiet = _NoUnexpectedOnlyReport()
    if active:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _check_head(name: str, model: Any, task: str) -> None:
    """transformers initialises a missing head at random: refuse a checkpoint that was not saved with it."""
    archs = [str(a) for a in (getattr(model.config, "architectures", None) or [])]
    if task == "units":
        if getattr(model, "quantizer", None) is None or (archs and not any("ForPreTraining" in a for a in archs)):
            raise ModelLoadError(f"{name!r} is a {archs[0] if archs else 'model'} checkpoint; {CODEBOOK_HINT}")
        if not (hasattr(model.base_model, "feature_extractor") and hasattr(model.base_model, "feature_projection")):
            raise ModelLoadError(f"{name!r}: its quantizer's input (feature encoder) is not where wav2vec2 has it")
    elif task == "classify":
        heads = ("ForSequenceClassification", "ForAudioClassification")
        if archs and not any(a.endswith(heads) for a in archs):
            raise ModelLoadError(
                f"{name!r} is a {archs[0]} checkpoint without a classification head; {CLASSIFIER_HINT}"
            )
        if not (hasattr(model, "projector") and hasattr(model, "classifier")):
            raise ModelLoadError(
                f"{name!r} ({type(model).__name__}) is not a wav2vec2-family sequence classifier "
                "(projector + mean pool + classifier)"
            )
