"""Feature and transformer-state reuse (streaming_asr.model.reuse) with real forward passes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import torch
from familymodels import FEATURE_ONLY_CASES, STATE_CASES, family_model
from helpers import cer, espeak_corpus, tiny_model, wer
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming_asr.config import StreamConfig
from streaming_asr.events import Final
from streaming_asr.model import CtcModel, ReuseInput, batch_key, tiny_config
from streaming_asr.offline import transcribe_streaming
from streaming_asr.session import StreamingSession

standin = pytest.mark.standin
FEATURES = StreamConfig(chunk_s=0.4, left_context_s=0.8, lookahead_s=0.2, feature_reuse=True)
STATE = StreamConfig(chunk_s=0.4, left_context_s=0.8, lookahead_s=0.2, feature_reuse=True, state_reuse=True)


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, int(16000 * seconds)).astype(np.float32)


def _full_features(model: CtcModel, audio: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        feats = model.model.base_model.feature_extractor(torch.from_numpy(audio)[None])
    return feats.transpose(1, 2)[0].numpy()


@pytest.mark.parametrize("state", [False, True])
def test_reuse_path_without_cache_is_the_hf_forward(state: bool) -> None:
    model = tiny_model()
    audio = model.info.normalize(_noise(1.5, 1))
    logp, cache = model([ReuseInput(audio, 0, None, state)])[0]
    np.testing.assert_allclose(logp, model([audio])[0], atol=1e-5)
    assert cache.frames == logp.shape[0]


@pytest.mark.parametrize(
    "config",
    [
        tiny_config(),  # group-norm CNN, bias-free convs (base-960h's layout)
        tiny_config(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True),  # large/lv60 layout
    ],
)
def test_new_frame_features_equal_a_full_recompute(config: object) -> None:
    model = CtcModel.from_config(config)
    audio = model.info.normalize(_noise(2.0, 2))
    full = _full_features(model, audio)
    for new_from in [1, 7, 40, 90]:
        with torch.inference_mode():
            new = model.reuse.new_features(torch.from_numpy(audio)[None], new_from)[0].numpy()
        np.testing.assert_allclose(new, full[new_from:], atol=2e-5)


@settings(max_examples=15, deadline=None)
@given(
    pushes=st.lists(st.integers(1, 9000), min_size=1, max_size=12),
    chunk=st.sampled_from([0.1, 0.32, 0.5]),
    left=st.sampled_from([0.0, 0.2, 0.66]),
    ahead=st.sampled_from([0.0, 0.12]),
    state=st.booleans(),
)
def test_every_windows_new_features_equal_its_full_recompute(
    pushes: list[int], chunk: float, left: float, ahead: float, state: bool
) -> None:
    """For any push sizes and geometry, each reuse window's new frames get a recompute's exact features."""
    model = tiny_model()
    cfg = StreamConfig(chunk_s=chunk, left_context_s=left, lookahead_s=ahead, feature_reuse=True, state_reuse=state)
    session = StreamingSession(model.info, cfg)
    rng = np.random.default_rng(len(pushes))
    windows = 0
    for i, n in enumerate(pushes + [0]):
        if n:
            session.push(rng.normal(0, 0.1, n).astype(np.float32))
        else:
            session.finish()
        while (win := session.next_window(max_chunks=1 + i % 3)) is not None:
            item = win.model_input
            out, cache = model([item])[0]
            expected = _full_features(model, win.audio)[item.new_from :]
            if not state:  # feature reuse returns the new frames' CNN features as its cache
                np.testing.assert_allclose(cache.data[0].numpy(), expected, atol=2e-5)
            with torch.inference_mode():
                got = model.reuse.new_features(torch.from_numpy(win.audio)[None], item.new_from)[0].numpy()
            np.testing.assert_allclose(got, expected, atol=2e-5)
            assert out.shape[0] == win.num_frames
            session.accept(win, (out, cache))
            windows += 1
    assert session.pop_events()[-1].reason == "stop"


def test_input_normalisation_matters_to_a_bias_free_conv0_with_group_norm_only_through_eps() -> None:
    """Bias-free conv-0 + GroupNorm cancels a window's gain and offset, except through GroupNorm's eps:
    at speech levels normalising the window changes features by < 0.5 %, for quiet input by far more,
    so windows keep their own normalisation and reuse takes the statistics over the whole window.
    A biased layer-norm CNN is not scale-invariant at all."""
    group = tiny_model()  # conv_bias=False, feat_extract_norm="group" (base-960h's layout)
    layer = CtcModel.from_config(tiny_config(feat_extract_norm="layer", conv_bias=True))

    def change(model: CtcModel, raw: np.ndarray) -> float:
        a, b = _full_features(model, raw), _full_features(model, model.info.normalize(raw))
        return float(np.abs(a - b).max() / np.abs(b).max())

    speech, quiet = _noise(1.0, 3) * 1.5 + 0.05, _noise(1.0, 3) * 0.05 + 0.05
    assert change(group, speech) < 0.005
    assert change(group, quiet) > 0.05
    assert change(layer, speech) > 0.1


def test_state_reuse_computes_only_new_frames_and_keeps_a_bounded_cache() -> None:
    model = tiny_model()
    session = StreamingSession(model.info, STATE)
    session.push(_noise(6.0, 4))
    session.finish()
    shapes, kept = [], []
    while (win := session.next_window(max_chunks=2)) is not None:
        item = win.model_input
        assert isinstance(item, ReuseInput) and item.state
        out = model([item])[0]
        shapes.append(
            (
                item.new_from,
                0 if item.cache is None else item.cache.frames,
                out[0].shape[0],
                win.own_end - win.own_start,
                win.forced,
            )
        )
        session.accept(win, out)
        if session.flushing:  # not yet the last final
            kept.append(session._cache.frames)
    # chunk 20 frames, left 40, look-ahead 10: output = owned + look-ahead, cache = left context
    assert shapes[0] == (0, 0, 50, 40, False)
    assert all(ctx == nf <= 40 for nf, ctx, *_ in shapes)
    assert all(n == owned + 10 for _, _, n, owned, forced in shapes if not forced)
    assert shapes[-1][-1]  # the flush window at the final
    assert max(kept) == 40 == kept[-1]  # the kept state is the left context, no more
    assert session._cache is None and session.buffered_samples == 0  # released with the last final
    finals = [e for e in session.pop_events() if isinstance(e, Final)]
    assert finals and finals[-1].reason == "stop"


def test_batch_key_includes_the_cache_length() -> None:
    audio = np.zeros(8000, np.float32)
    assert batch_key(ReuseInput(audio, 10, None, True)) != batch_key(ReuseInput(audio, 12, None, True))
    assert batch_key(ReuseInput(audio, 10, None, True)) != batch_key(ReuseInput(audio, 10, None, False))


def test_batched_state_windows_equal_one_by_one() -> None:
    model = tiny_model()
    items = []
    for seed in range(3):
        session = StreamingSession(model.info, STATE)
        session.push(_noise(3.0, 10 + seed))
        for _ in range(3):
            win = session.next_window()
            session.accept(win, model([win.model_input])[0])
        items.append(session.next_window().model_input)
    together = model(items)
    for item, (logp, cache) in zip(items, together):
        alone, alone_cache = model([item])[0]
        np.testing.assert_allclose(logp, alone, atol=1e-5)
        np.testing.assert_allclose(cache.data.numpy(), alone_cache.data.numpy(), atol=1e-5)


def test_bf16_runs_the_reuse_path_close_to_fp32() -> None:
    fp32 = CtcModel.from_config(tiny_config())
    bf16 = CtcModel.from_config(tiny_config(), precision="bf16")
    audio = fp32.info.normalize(_noise(1.0, 5))
    a = fp32([ReuseInput(audio, 0, None, True)])[0][0]
    b = bf16([ReuseInput(audio, 0, None, True)])[0][0]
    assert bf16.precision == "bf16" and b.dtype == np.float32
    assert np.abs(np.exp(a) - np.exp(b)).max() < 0.05


@standin
@pytest.mark.parametrize(
    "config",
    [StreamConfig(feature_reuse=True), StreamConfig(feature_reuse=True, state_reuse=True)],
    ids=["features", "state"],
)
def test_reuse_streaming_stays_close_to_offline(config: StreamConfig) -> None:
    refs, off, streamed = espeak_corpus(config)
    assert wer(refs, streamed) <= wer(refs, off) + 0.05
    assert cer(off, streamed) < 0.12


def test_state_refresh_reruns_the_newest_cached_frames_and_replaces_their_state() -> None:
    model = tiny_model()
    cfg = StreamConfig(
        chunk_s=0.4, left_context_s=0.8, lookahead_s=0.2, feature_reuse=True, state_reuse=True, state_refresh_s=0.2
    )
    session = StreamingSession(model.info, cfg)
    session.push(_noise(4.0, 6))
    session.finish()
    seen = []
    while (win := session.next_window()) is not None:
        item = win.model_input
        logp, cache = model([item])[0]
        seen.append((item.refresh, logp.shape[0], cache.frames, win.num_frames))
        session.accept(win, (logp, cache))
        if session.flushing:  # until the last final, which releases the kept state
            assert session._cache.frames == min(40, session.next_frame)
    assert session._cache is None
    assert seen[0][0] == 0 and all(r == 10 for r, *_ in seen[1:])
    assert all(n == frames and c == n + r for r, n, c, frames in seen)  # log-probs: new frames; cache: + refreshed
    # refreshing every cached frame is a recompute of the transformer over the whole window
    full = StreamConfig(
        chunk_s=0.4, left_context_s=0.4, lookahead_s=0.2, state_reuse=True, feature_reuse=True, state_refresh_s=0.4
    )
    exact = StreamConfig(chunk_s=0.4, left_context_s=0.4, lookahead_s=0.2, feature_reuse=True)
    audio = _noise(3.0, 7)
    a = transcribe_streaming(model, model.info, audio, full).text
    b = transcribe_streaming(model, model.info, audio, exact).text
    assert a == b


def test_lookahead_reuse_hands_the_previous_lookahead_features_to_the_next_window() -> None:
    model = tiny_model()
    cfg = StreamConfig(
        chunk_s=0.4, left_context_s=0.8, lookahead_s=0.2, feature_reuse=True, state_reuse=True, lookahead_reuse=True
    )
    session = StreamingSession(model.info, cfg)
    session.push(_noise(4.0, 8))
    plain = StreamingSession(model.info, STATE)
    plain.push(_noise(4.0, 8))
    aheads = []
    while (win := session.next_window()) is not None:
        item = win.model_input
        aheads.append(0 if item.ahead is None else item.ahead.frames)
        ref = plain.next_window()
        out = model([item])[0]
        if item.ahead is not None:  # same projected features the plain path computes, up to GroupNorm statistics
            proj = model([ref.model_input])[0][1].data[0, : item.ahead.frames]
            assert np.abs(item.ahead.data[0].numpy() - proj.numpy()).max() < 0.2 * np.abs(proj.numpy()).max()
            assert batch_key(item) != batch_key(ref.model_input)
        session.accept(win, out)
        plain.accept(ref, model([ref.model_input])[0])
    assert aheads[0] == 0 and set(aheads[1:]) == {10}
    session.finish()
    while (win := session.next_window()) is not None:
        session.accept(win, model([win.model_input])[0])
    assert [e for e in session.pop_events() if isinstance(e, Final)][-1].reason == "stop"


# ------------------------------------------------- the other CTC families (model/families.py, tests/familymodels.py)
FEATURE_CASES = STATE_CASES + FEATURE_ONLY_CASES  # families whose CNN is wav2vec2's


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], CtcModel]:
    return lambda case: family_model(case, tmp_path_factory)


def _committed(model: CtcModel, audio: np.ndarray, config: StreamConfig) -> np.ndarray:
    """Every committed frame's log-probs of a stream of `audio` pushed in 0.1 s pieces."""
    pieces: list[np.ndarray] = []
    session = StreamingSession(model.info, config, on_commit=lambda first, logp: pieces.append(logp))
    for i in range(0, audio.size, 1600):
        session.push(audio[i : i + 1600])
        session.run(model)
    session.finish()
    session.run(model)
    return np.concatenate(pieces)


@pytest.mark.parametrize("case", FEATURE_CASES)
def test_each_familys_new_frame_features_equal_a_full_recompute(case: str, family: Callable[[str], CtcModel]) -> None:
    model = family(case)
    audio = model.info.normalize(_noise(2.0, 2))
    full = _full_features(model, audio)
    for new_from in [1, 7, 40, 90]:
        with torch.inference_mode():
            new = model.reuse.new_features(torch.from_numpy(audio)[None], new_from)[0].numpy()
        np.testing.assert_allclose(new, full[new_from:], atol=2e-5)


@pytest.mark.parametrize("case", FEATURE_CASES)
def test_each_familys_feature_reuse_windows_get_a_recomputes_features(
    case: str, family: Callable[[str], CtcModel]
) -> None:
    """Through a stream, every feature-reuse window's new frames get the CNN features a recompute of that
    window gives them (returned as its cache), and as many log-probs as the session expects."""
    model = family(case)
    session = StreamingSession(model.info, replace(FEATURES, chunk_s=0.3))
    audio = _noise(3.0, 9)
    windows = 0
    for i in range(0, audio.size + 4000, 4000):
        if i < audio.size:
            session.push(audio[i : i + 4000])
        else:
            session.finish()
        while (win := session.next_window(max_chunks=1 + windows % 3)) is not None:
            item = win.model_input
            assert isinstance(item, ReuseInput) and not item.state
            out, cache = model([item])[0]
            expected = _full_features(model, win.audio)[item.new_from :]
            np.testing.assert_allclose(cache.data[0].numpy(), expected, atol=2e-5)
            assert out.shape[0] == win.num_frames
            session.accept(win, (out, cache))
            windows += 1
    assert windows > 5 and session.pop_events()[-1].reason == "stop"


@pytest.mark.parametrize("case,state", [(c, False) for c in FEATURE_CASES] + [(c, True) for c in STATE_CASES])
def test_each_familys_reuse_path_without_cache_is_the_hf_forward(
    case: str, state: bool, family: Callable[[str], CtcModel]
) -> None:
    """reuse.py's forward of a whole window (feature path: CNN, projection, the family's own encoder;
    state path: its own attention layers and positional convolutions) is the HF model's."""
    model = family(case)
    audio = model.info.normalize(_noise(1.5, 1))
    logp, cache = model([ReuseInput(audio, 0, None, state)])[0]
    np.testing.assert_allclose(logp, model([audio])[0], atol=1e-5)
    assert cache.frames == logp.shape[0] and cache.data.shape[0] == (model.reuse.state_rows if state else 1)


@pytest.mark.parametrize("case", STATE_CASES)
def test_each_familys_positions_of_new_frames_read_cached_frames_as_a_recompute(
    case: str, family: Callable[[str], CtcModel]
) -> None:
    """The positional convolution(s) on the new frames, with cached frames in front, give what the HF
    module gives those frames over the whole window: one conv reaches 8 frames back here, data2vec-audio's
    stack of three 7-wide convs 9; HuBERT's batch norm before the conv is applied too."""
    model = family(case)
    positions = model.reuse.positions
    assert positions.reach == (9 if case == "data2vec-audio" else 8)
    width = model.model.config.hidden_size
    proj = torch.randn(2, 60, width, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        full = model.model.base_model.encoder.pos_conv_embed(proj).numpy()
        np.testing.assert_allclose(positions(proj, None).numpy(), full, atol=1e-5)
        for split in [1, 3, positions.reach, positions.reach + 1, 25, 59]:
            got = positions(proj[:, split:], proj[:, :split]).numpy()
            np.testing.assert_allclose(got, full[:, split:], atol=1e-5, err_msg=f"{split} cached frames")


@pytest.mark.parametrize("case", STATE_CASES)
def test_each_familys_state_reuse_refreshing_every_cached_frame_is_feature_reuse(
    case: str, family: Callable[[str], CtcModel]
) -> None:
    """With every left-context frame refreshed, the state path runs the transformer over the whole window:
    its committed frames are feature reuse's (the layers of each family computed as the HF model does)."""
    model = family(case)
    exact = StreamConfig(chunk_s=0.4, left_context_s=0.4, lookahead_s=0.2, feature_reuse=True)
    full = replace(exact, state_reuse=True, state_refresh_s=0.4)
    audio = _noise(3.0, 7)
    np.testing.assert_allclose(_committed(model, audio, full), _committed(model, audio, exact), atol=1e-4)
