"""The HF wav2vec2-family forward taken apart so that a window can reuse what earlier windows computed.

`ReuseForward` runs :class:`~.inputs.ReuseInput` batches on a loaded `*ForCTC` model, using the
model's own modules (so any precision the model was put in applies). Which families get which path
is one table (:data:`~.families.FAMILIES`): feature reuse for wav2vec2, HuBERT, data2vec-audio, WavLM
and Wav2Vec2-Conformer (all the same kind of CNN), state reuse only where the layers below are what
the family computes (wav2vec2, HuBERT, data2vec-audio); w2v-BERT has no CNN and gets neither.

- **Exact feature reuse.** The CNN is local except conv-0's GroupNorm, whose statistics span the
  whole input. Those statistics are taken over the whole window, as in a full recompute (from the
  input frames' mean and covariance: conv-0 is linear), and conv-0..6 then run only on the samples
  the new frames read. The new frames' features therefore equal a full recompute's to float
  tolerance (tests/test_reuse.py). Layer-norm CNNs are local throughout: they just run on the
  new frames' samples.
- **Transformer state reuse.** Only new frames go through the transformer. Their positional
  convolution reads cached projected features of up to half its kernel of earlier frames (zeros
  beyond, exactly where a recompute window's edge would put zeros; data2vec-audio's stack of
  positional convolutions reads as far as the whole stack reaches), and each layer's attention
  attends to the cached keys/values of the left-context frames plus the new frames' own: limited
  left-context attention over the same span a recompute window sees, but with the left frames'
  states from when they were computed, not recomputed with the newer audio. Both post-LN (base,
  `do_stable_layer_norm=False`) and pre-LN (large/lv60, the stand-in) layer layouts are handled.
- **Look-ahead feature reuse** (state path, optional): the previous window's look-ahead frames are
  this window's first new frames; their projected features are taken from that window instead of
  running the CNN on them again (they differ from a recompute only through conv-0's GroupNorm
  statistics, which then come from the previous window).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .families import family_of
from .info import ModelLoadError
from .inputs import FrameCache, ReuseInput


class ReuseForward:
    """Reuse-path forward for one `*ForCTC` model; built once per model (folds the weight norm)."""

    def __init__(self, model: Any, dtype: Any, device: str) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.dtype = dtype
        self.device = device
        family = family_of(model.config)
        base: Any = getattr(model, model.base_model_prefix, None)
        needed = ("feature_extractor", "feature_projection", "encoder")
        why = None
        if not family.feature_reuse:
            why = family.note
        elif base is None or not all(hasattr(base, n) for n in needed):
            why = "no wav2vec2-style encoder"
        elif getattr(base, "adapter", None) is not None:
            why = "a CTC adapter's strided convolutions follow the encoder"
        if why is not None:
            raise ModelLoadError(
                f"{type(model).__name__} ({why}): feature/state reuse "
                "is unavailable for it (run with --feature-reuse off --state-reuse off)"
            )
        self.base = base
        self.convs = base.feature_extractor.conv_layers
        strides = [layer.conv.stride[0] for layer in self.convs]
        self.conv0_per_frame = int(np.prod(strides[1:]))  # conv-0 outputs between consecutive frames
        enc = base.encoder
        self.encoder = enc
        self.state = family.state_reuse  # the transformer path below computes this family's layers
        self.why_no_state = family.note
        if not self.state:
            return
        self.pre_ln = type(enc).__name__.endswith("StableLayerNorm") or bool(
            getattr(model.config, "do_stable_layer_norm", False)
        )
        self.positions = PositionalConvs(enc.pos_conv_embed)
        self.layers = list(enc.layers)
        self.heads = self.layers[0].attention.num_heads

    @property
    def state_rows(self) -> int:
        return 1 + 2 * len(self.layers) if self.state else 1

    def __call__(self, windows: Sequence[ReuseInput]) -> list[tuple[np.ndarray, FrameCache]]:
        torch = self.torch
        if windows[0].state and not self.state:
            raise ModelLoadError(
                f"{type(self.model).__name__}: no transformer state reuse ({self.why_no_state}); "
                "run with --state-reuse off"
            )
        audio = torch.from_numpy(np.stack([w.audio for w in windows]).astype(np.float32))
        first = windows[0]
        cache = ahead = None
        if first.new_from:
            cache = torch.stack([w.cache.data for w in windows]).to(self.device)  # type: ignore[union-attr]
        skip = first.ahead.frames if first.ahead is not None else 0
        if skip:
            ahead = torch.stack([w.ahead.data[0] for w in windows]).to(self.device)  # type: ignore[union-attr]
        with torch.inference_mode():
            feats = self.new_features(audio.to(self.device, self.dtype), first.new_from + skip)
            if first.state:
                logits, states = self._state_forward(feats, cache, first.refresh, ahead)
            else:
                logits, states = self._feature_forward(feats, cache)
            logp = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
        return [(logp[i], FrameCache(states[i])) for i in range(len(windows))]

    # ------------------------------------------------------------ features
    def new_features(self, audio: Any, new_from: int) -> Any:
        """CNN features (batch, frames, channels) of window frames [new_from, end); exact (see module doc)."""
        first = self.convs[0]
        start = new_from * self.conv0_per_frame * first.conv.stride[0]  # first sample new frames read
        norm = getattr(first, "layer_norm", None)
        if isinstance(norm, self.torch.nn.GroupNorm) and start:
            hidden = self._conv0_group_norm(first, audio, start)
        else:
            hidden = first(audio[:, None, start:])
        for layer in self.convs[1:]:
            hidden = layer(hidden)
        return hidden.transpose(1, 2)

    def _conv0_group_norm(self, layer: Any, audio: Any, start: int) -> Any:
        """conv-0 + GroupNorm + activation on samples [start, end), with statistics of the whole window.

        conv-0 is linear in each (kernel-long) input frame, so a channel's mean and variance over the
        window follow from the mean and covariance of the window's input frames (kernel x kernel):
        exact, and far cheaper than running conv-0 over all of the left context.
        """
        torch = self.torch
        conv, norm = layer.conv, layer.layer_norm
        weight = conv.weight[:, 0].float()  # (channels, kernel)
        frames = audio.float().unfold(-1, conv.kernel_size[0], conv.stride[0])  # (batch, positions, kernel)
        mean_in = frames.mean(dim=1)
        centred = frames - mean_in[:, None]
        cov = centred.transpose(1, 2) @ centred / frames.shape[1]  # (batch, kernel, kernel)
        mean = mean_in @ weight.T
        if conv.bias is not None:
            mean = mean + conv.bias.float()
        var = ((weight @ cov) * weight).sum(-1)  # w_c^T cov w_c for every channel c
        scale = torch.rsqrt(var + norm.eps) * norm.weight.float()
        shift = norm.bias.float() - mean * scale
        hidden = torch.nn.functional.conv1d(audio[:, None, start:], conv.weight, conv.bias, stride=conv.stride)
        hidden = hidden * scale[..., None].to(hidden.dtype) + shift[..., None].to(hidden.dtype)
        return layer.activation(hidden)

    def _feature_forward(self, feats: Any, cache: Any) -> tuple[Any, Any]:
        """Cached features + new features, then the unchanged transformer over the whole window."""
        torch = self.torch
        full = feats if cache is None else torch.cat([cache[:, 0], feats], dim=1)
        hidden = self.encoder(self.project(full))[0]
        return self.model.lm_head(hidden), feats[:, None]

    # --------------------------------------------------------- transformer
    def _state_forward(self, feats: Any, cache: Any, refresh: int = 0, ahead: Any = None) -> tuple[Any, Any]:
        """New frames through the transformer against cached left-context keys/values.

        `refresh` > 0: the last `refresh` cached frames are run again too (from their cached projected
        features), now with this window's right context; their new keys/values replace the cached
        ones and only the new frames' log-probs are returned. `ahead`: projected features of the
        first new frames, from the previous window's look-ahead (their CNN is not run again).
        """
        torch = self.torch
        proj = self.project(feats)
        if ahead is not None:
            proj = torch.cat([ahead, proj], dim=1)
        if refresh:
            proj = torch.cat([cache[:, 0, -refresh:], proj], dim=1)
            cache = cache[:, :, :-refresh] if cache.shape[2] > refresh else None
        hidden = proj + self.positions(proj, None if cache is None else cache[:, 0])
        if not self.pre_ln:
            hidden = self.encoder.layer_norm(hidden)
        rows = [proj]
        for i, layer in enumerate(self.layers):
            past = None if cache is None else (cache[:, 1 + 2 * i], cache[:, 2 + 2 * i])
            hidden, k, v = self._layer(layer, hidden, past)
            rows += [k, v]
        if self.pre_ln:
            hidden = self.encoder.layer_norm(hidden)
        return self.model.lm_head(hidden[:, refresh:]), torch.stack(rows, dim=1)

    def project(self, feats: Any) -> Any:
        """The feature projection (layer norm + linear): wav2vec2's returns (projected, normed), HuBERT's a tensor."""
        out = self.base.feature_projection(feats)
        return out[0] if isinstance(out, tuple) else out

    def _layer(self, layer: Any, hidden: Any, past: tuple[Any, Any] | None) -> tuple[Any, Any, Any]:
        """One encoder layer on the new frames; returns (hidden, keys, values) of the new frames."""
        torch = self.torch
        attn = layer.attention
        x = layer.layer_norm(hidden) if self.pre_ln else hidden
        q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        keys, values = (k, v) if past is None else (torch.cat([past[0], k], 1), torch.cat([past[1], v], 1))
        out = self._attend(q, keys, values)
        out = attn.out_proj(out)
        if self.pre_ln:
            hidden = hidden + out
            hidden = hidden + layer.feed_forward(layer.final_layer_norm(hidden))
            if getattr(layer, "adapter_layer", None) is not None:
                hidden = hidden + layer.adapter_layer(hidden)
        else:
            hidden = layer.layer_norm(hidden + out)
            hidden = layer.final_layer_norm(hidden + layer.feed_forward(hidden))
        return hidden, k, v

    def _attend(self, q: Any, k: Any, v: Any) -> Any:
        batch, new, width = q.shape
        heads = self.heads

        def split(t: Any) -> Any:
            return t.view(batch, t.shape[1], heads, width // heads).transpose(1, 2)

        out = self.torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
        return out.transpose(1, 2).reshape(batch, new, width)


class PositionalConvs:
    """The encoder's convolutional position embedding for the new frames only, reading cached frames on the left.

    One grouped convolution (wav2vec2, HuBERT, WavLM; weight norm folded once; HuBERT may batch-norm
    its input first) or, in data2vec-audio, a stack of them, each followed by a parameter-free layer
    norm. Each pads with zeros on both sides ("same" length, the last output dropped for even
    kernels), so the new frames' output depends on `reach` (the sum of the left paddings) earlier
    frames: with that many cached frames (or all of the window's, when it has fewer) in front, it is
    the output a recompute of the window gives them.
    """

    def __init__(self, pos: Any) -> None:
        import torch

        self.torch = torch
        stack = list(pos.layers) if hasattr(pos, "layers") else [pos]  # data2vec-audio: a stack
        self.pre = getattr(pos, "batch_norm", None)  # HuBERT's conv_pos_batch_norm (eval: per-channel affine)
        self.convs: list[tuple[Any, Any, int, int, Any, Any]] = []
        for layer in stack:
            conv = layer.conv
            weight = conv.weight.detach().clone()  # weight norm (where there is one) folded once
            bias = None if conv.bias is None else conv.bias.detach().clone()
            norm = getattr(layer, "layer_norm", None)  # data2vec-audio: over channels, per frame
            self.convs.append((weight, bias, conv.groups, int(conv.padding[0]), norm, layer.activation))
        self.reach = sum(pad for _, _, _, pad, _, _ in self.convs)

    def __call__(self, proj: Any, past: Any) -> Any:
        torch = self.torch
        new = proj.shape[1]
        have = 0 if past is None else min(self.reach, past.shape[1])
        x = torch.cat([past[:, past.shape[1] - have :], proj], dim=1) if have else proj
        x = x.transpose(1, 2)
        if self.pre is not None:
            x = self.pre(x)
        length = x.shape[-1]
        for weight, bias, groups, pad, norm, act in self.convs:
            x = torch.nn.functional.conv1d(x, weight, bias, padding=pad, groups=groups)[..., :length]
            if norm is not None:
                x = norm(x.transpose(1, 2)).transpose(1, 2)
            x = act(x)
        return x[..., length - new :].transpose(1, 2)
