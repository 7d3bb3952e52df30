"""Tiny random CTC checkpoints of every family in streaming_asr/model/families.py, saved with their
processor (tokenizer + the family's feature extractor) and loaded through CtcModel.load, as real ones are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from streaming_asr.model import CtcModel, default_vocab
from streaming_asr.model.families import tiny_ctc_config

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "wav2vec2": ("wav2vec2", {}),
    "hubert": ("hubert", {}),
    # HuBERT-large's layout: layer-norm CNN, pre-LN layers; plus the batch norm before the positional
    # convolution and a projection without layer norm (the options wav2vec2 has no counterpart for)
    "hubert-large": (
        "hubert",
        dict(
            feat_extract_norm="layer",
            conv_bias=True,
            do_stable_layer_norm=True,
            conv_pos_batch_norm=True,
            feat_proj_layer_norm=False,
        ),
    ),
    "data2vec-audio": ("data2vec-audio", {}),
    "wavlm": ("wavlm", {}),
    "conformer": ("wav2vec2-conformer", {}),  # relative positions
    "conformer-rotary": ("wav2vec2-conformer", dict(position_embeddings_type="rotary")),
    "w2v-bert": ("wav2vec2-bert", {}),
    "w2v-bert-adapter": ("wav2vec2-bert", dict(add_adapter=True, num_adapter_layers=1)),  # 40 ms frames
}
STATE_CASES = ["wav2vec2", "hubert", "hubert-large", "data2vec-audio"]  # families.py: exact state reuse
FEATURE_ONLY_CASES = ["wavlm", "conformer", "conformer-rotary"]
NO_REUSE_CASES = ["w2v-bert", "w2v-bert-adapter"]

_models: dict[str, CtcModel] = {}


def build_ctc(case: str, seed: int = 0) -> Any:
    """The random-init `*ForCTC` model of `case` (fp32, eval)."""
    from transformers import AutoModelForCTC

    family, overrides = CASES[case]
    torch.manual_seed(seed)
    model = AutoModelForCTC.from_config(tiny_ctc_config(family, **overrides)).eval()
    norm = getattr(model.base_model.encoder, "pos_conv_embed", None)
    norm = getattr(norm, "batch_norm", None)
    if norm is not None:  # running statistics that are not the identity, so the test sees the norm
        gen = torch.Generator().manual_seed(seed)
        width = norm.running_mean.shape[0]
        with torch.no_grad():
            norm.running_mean.copy_(torch.randn(width, generator=gen) * 0.3)
            norm.running_var.copy_(torch.rand(width, generator=gen) + 0.5)
            norm.weight.copy_(torch.rand(width, generator=gen) + 0.5)
            norm.bias.copy_(torch.randn(width, generator=gen) * 0.1)
    return model


def save_checkpoint(case: str, directory: Path) -> Path:
    """`case`'s model, tokenizer and feature extractor in `directory`, as `save_pretrained` writes them."""
    from transformers import (
        SeamlessM4TFeatureExtractor,
        Wav2Vec2BertProcessor,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Processor,
    )

    model = build_ctc(case)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    vocab = directory / "vocab.json"
    vocab.write_text(json.dumps({t: i for i, t in enumerate(default_vocab(model.config.vocab_size))}))
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    if CASES[case][0] == "wav2vec2-bert":
        processor: Any = Wav2Vec2BertProcessor(feature_extractor=SeamlessM4TFeatureExtractor(), tokenizer=tokenizer)
    else:
        layer = getattr(model.config, "feat_extract_norm", "layer") == "layer"
        extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=layer)
        processor = Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)
    processor.save_pretrained(directory)
    return directory


def family_model(case: str, tmp_path_factory: pytest.TempPathFactory) -> CtcModel:
    """`case`'s checkpoint saved into a temporary directory and loaded with CtcModel.load (once per session)."""
    if case not in _models:
        directory = save_checkpoint(case, tmp_path_factory.mktemp(case))
        _models[case] = CtcModel.load(str(directory), device="cpu", precision="fp32")
    return _models[case]


def hf_offline(model: CtcModel, audio: np.ndarray) -> np.ndarray:
    """transformers' own result for a whole signal: the checkpoint's processor, then the model, log-probs
    of the frames that are not padding (the fbank extractor pads to an even frame count and masks it)."""
    from transformers import AutoFeatureExtractor

    extractor = AutoFeatureExtractor.from_pretrained(model.info.name)
    inputs = extractor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        logits = model.model(**inputs).logits[0]
    valid = logits.shape[0]
    if "attention_mask" in inputs:
        valid = int(model.model._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1))[0])
    out: np.ndarray = torch.log_softmax(logits[:valid], dim=-1).numpy()
    return out


def noise(seconds: float, seed: int = 0, samples: int | None = None) -> np.ndarray:
    n = int(16000 * seconds) if samples is None else samples
    return np.random.default_rng(seed).normal(0, 0.1, n).astype(np.float32)
