"""Which CTC architectures stream, and the few facts that differ between them: the one table of families.

Every family in :data:`FAMILIES` streams on the recompute path (each window through the HF model, so a
window covering the utterance is the offline output). What differs, and is read only from here:

- **the front end**, as a stack of unpadded convolutions (:class:`~.info.ModelInfo` derives the frame
  grid from it): the waveform CNN (`conv_kernel` / `conv_stride`), or for w2v-BERT 2.0 its log-mel
  filterbank, described as a *virtual* stack (SeamlessM4TFeatureExtractor: 400-sample window, 160 hop,
  no centring, then pairs of frames stacked: kernels (400, 2), strides (160, 2)). A CTC adapter's
  strided convolutions (`add_adapter`) extend either stack;
- **whether the engine normalises each waveform window** (zero mean, unit variance): not for the
  fbank front end, whose extractor normalises each mel bin over the window itself;
- **the model input**: the waveform window, or the window's stacked fbank (:class:`FbankFrontEnd`);
- **the reuse paths** that :mod:`.reuse` computes exactly for the family's layers (see each `note`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .info import ModelLoadError

FBANK_WINDOW = 400  # samples per fbank frame (SeamlessM4TFeatureExtractor: fixed, 25 ms at 16 kHz)
FBANK_HOP = 160  # samples between fbank frames (10 ms at 16 kHz)


@dataclass(frozen=True)
class Family:
    """What the engine needs to know about one `model_type`."""

    model_type: str
    label: str
    front_end: str  # "waveform" (conv feature encoder) or "fbank" (log-mel input_features)
    feature_reuse: bool  # reuse.py's CNN feature reuse is exact for this family
    state_reuse: bool  # reuse.py's transformer state reuse runs this family's layers as the HF model does
    adapter_padding: str  # how its CTC adapter's convolutions pad: "one" (1 sample) or "half-stride"
    note: str  # why a reuse path is missing, or what is special (logs, README)
    masked_padding: bool = False  # a masked, zero-padded batch equals each item alone (layer-norm CNN only)


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family("wav2vec2", "wav2vec2", "waveform", True, True, "one", "post-LN (base) and pre-LN (large) layers", True),
        Family(
            "hubert",
            "HuBERT",
            "waveform",
            True,
            True,
            "one",
            "wav2vec2's layers; its feature projection returns a tensor, optional batch norm before the "
            "positional convolution",
            masked_padding=True,
        ),
        Family(
            "data2vec-audio",
            "data2vec-audio",
            "waveform",
            True,
            True,
            "one",
            "layer-norm CNN (local: no statistics to carry); a stack of positional convolutions, each "
            "followed by a layer norm, reads as many cached frames as the stack reaches",
        ),
        Family(
            "wavlm",
            "WavLM",
            "waveform",
            True,
            False,
            "one",
            "state reuse refused: attention adds a gated relative position bias (gates from each layer's "
            "hidden states) that reuse.py's plain key/value attention does not compute",
            masked_padding=True,
        ),
        Family(
            "wav2vec2-conformer",
            "Wav2Vec2-Conformer",
            "waveform",
            True,
            False,
            "one",
            "state reuse refused: relative or rotary position attention and convolution modules in every "
            "layer, which reuse.py's plain attention layer does not compute",
        ),
        Family(
            "wav2vec2-bert",
            "w2v-BERT 2.0",
            "fbank",
            False,
            False,
            "half-stride",
            "no reuse: its front end is a log-mel filterbank (no CNN to reuse) and its conformer layers "
            "(relative-key attention, causal convolution modules) are not what reuse.py computes",
        ),
    )
}


def family_of(config: Any) -> Family:
    """The family of a transformers config; an unknown wav2vec2-like model_type streams without reuse."""
    model_type = str(getattr(config, "model_type", ""))
    family = FAMILIES.get(model_type)
    if family is not None:
        return family
    if getattr(config, "conv_kernel", None) and getattr(config, "conv_stride", None):
        return Family(model_type, model_type, "waveform", False, False, "one", "not a family reuse.py was checked on")
    raise ModelLoadError(
        f"{type(config).__name__} (model_type {model_type!r}) is not a streaming CTC family: "
        f"supported are {', '.join(f.label for f in FAMILIES.values())}"
    )


def _extractor(config: Any, extractor: Any) -> Any:
    """The checkpoint's feature extractor (a processor's), or the family default when there is none."""
    found = getattr(extractor, "feature_extractor", extractor)
    if found is None and family_of(config).front_end == "fbank":
        from transformers import SeamlessM4TFeatureExtractor

        found = SeamlessM4TFeatureExtractor()  # type: ignore[no-untyped-call]
    return found


def conv_stack(config: Any, extractor: Any = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(kernels, strides) of the front end as unpadded convolutions, in input samples (see module doc)."""
    family = family_of(config)
    if family.front_end == "fbank":
        stack = int(getattr(_extractor(config, extractor), "stride", 2))
        kernels, strides = [FBANK_WINDOW, stack], [FBANK_HOP, stack]
    else:
        kernels, strides = list(config.conv_kernel), list(config.conv_stride)
    if getattr(config, "add_adapter", False):
        stride = int(config.adapter_stride)
        pad = 1 if family.adapter_padding == "one" else stride // 2
        kernel = int(config.adapter_kernel_size) - 2 * pad  # a padded conv's length as an unpadded one's
        if kernel < 1:
            raise ModelLoadError(f"adapter kernel {config.adapter_kernel_size} with padding {pad}: unsupported")
        kernels += [kernel] * int(config.num_adapter_layers)
        strides += [stride] * int(config.num_adapter_layers)
    return tuple(kernels), tuple(strides)


def normalizes_waveform(config: Any, extractor: Any = None) -> bool:
    """Whether the engine normalises each waveform window (the HF extractor's do_normalize).

    Never for the fbank front end: its extractor normalises every mel bin over the window itself, so a
    normalised waveform would be normalised twice (and log-mel is not gain-invariant at the mel floor).
    """
    if family_of(config).front_end == "fbank":
        return False
    found = getattr(extractor, "feature_extractor", extractor)
    return bool(getattr(found, "do_normalize", True))


class FbankFrontEnd:
    """Waveform windows in, w2v-BERT's `input_features` out: the checkpoint's own extractor, per window.

    Run unpadded: a window of F fbank frames gives floor(F / stride) stacked frames, as the conv stack
    says (the HF processor pads F to even and masks the extra frame; the frames before it are the same).
    """

    def __init__(self, extractor: Any) -> None:
        self.extractor = extractor
        self.rate = int(getattr(extractor, "sampling_rate", 16000))

    def __call__(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        out = self.extractor(
            [np.asarray(w, np.float32) for w in windows], sampling_rate=self.rate, padding=False, return_tensors="np"
        )
        features: np.ndarray = np.asarray(out["input_features"], np.float32)
        return features


def stack_waveforms(windows: Sequence[np.ndarray]) -> np.ndarray:
    """The waveform families' model input: same-length windows as one (batch, samples) array."""
    return np.stack(windows).astype(np.float32, copy=False)


def front_end(config: Any, extractor: Any = None) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """What turns same-length (normalised, where the family wants it) waveform windows into the model's input."""
    if family_of(config).front_end == "fbank":
        return FbankFrontEnd(_extractor(config, extractor))
    return stack_waveforms


_TINY_CONFIGS = {
    "wav2vec2": "Wav2Vec2Config",
    "hubert": "HubertConfig",
    "wavlm": "WavLMConfig",
    "data2vec-audio": "Data2VecAudioConfig",
    "wav2vec2-conformer": "Wav2Vec2ConformerConfig",
    "wav2vec2-bert": "Wav2Vec2BertConfig",
}


def tiny_ctc_config(family: str = "wav2vec2", **overrides: Any) -> Any:
    """A very small random-init config of `family` (a model_type in FAMILIES) for tests and plumbing:
    hidden 32, 2 layers, 2 heads, vocabulary 32; waveform families keep base-960h's frame geometry."""
    import transformers

    if family not in _TINY_CONFIGS:
        raise ValueError(f"no tiny config for {family!r}; choose one of {', '.join(_TINY_CONFIGS)}")
    settings: dict[str, Any] = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=32, pad_token_id=0
    )
    if FAMILIES[family].front_end == "waveform":
        settings.update(conv_dim=(16,) * 7, num_conv_pos_embedding_groups=4, num_conv_pos_embeddings=16)
    if family == "data2vec-audio":  # num_conv_pos_embeddings counts its positional conv layers here
        settings.update(num_conv_pos_embeddings=3, conv_pos_kernel_size=7)
    if family in ("wav2vec2-conformer", "wav2vec2-bert"):
        settings.update(conv_depthwise_kernel_size=7)
    settings.update(overrides)
    return getattr(transformers, _TINY_CONFIGS[family])(**settings)
