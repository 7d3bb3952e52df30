"""Every CTC family streams (HuBERT, WavLM, data2vec-audio, Wav2Vec2-Conformer, w2v-BERT 2.0 and wav2vec2):
tiny random checkpoints saved and loaded like real ones, real forward passes, a real server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import websockets
from familymodels import CASES, FEATURE_ONLY_CASES, NO_REUSE_CASES, STATE_CASES, family_model, hf_offline, noise
from helpers import start_server_thread

from streaming_asr.cli import usable_config
from streaming_asr.config import SERVE_DEFAULT, StreamConfig
from streaming_asr.events import Final
from streaming_asr.model import CtcModel, ModelLoadError, ReuseInput
from streaming_asr.model.families import FAMILIES, FBANK_HOP, family_of, tiny_ctc_config
from streaming_asr.session import StreamingSession

ALL = list(CASES)


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], CtcModel]:
    return lambda case: family_model(case, tmp_path_factory)


@pytest.mark.parametrize("case", ALL)
def test_frames_for_is_the_models_real_output_length(case: str, family: Callable[[str], CtcModel]) -> None:
    """ModelInfo's conv stack (the waveform CNN, or w2v-BERT's fbank as a virtual one, adapters included)
    predicts the output frames of the model, and of transformers' own processor + model, for any length."""
    model = family(case)
    info = model.info
    assert type(model.model).__name__.endswith("ForCTC") and family_of(model.model.config).model_type in FAMILIES
    lengths = [560, 561, 719, 720, 879, 880, 1199, 1200, 1281, 4000, 16000, 16080, 16170, 33333]
    for n in lengths:
        audio = noise(0, seed=n, samples=n)
        expected = info.frames_for(n)
        got = model([info.normalize(audio)])[0]
        assert got.shape == (expected, len(info.vocab)), (n, got.shape, expected)
        if expected:
            assert hf_offline(model, audio).shape[0] == expected, n  # also where the HF extractor pads
    for k in range(1, 9):
        assert info.frames_for(info.samples_for(k)) == k and info.frames_for(info.samples_for(k) - 1) == k - 1
    if family_of(model.model.config).front_end == "waveform":
        assert all(info.frames_for(n) == int(model.model._get_feat_extract_output_lengths(n)) for n in lengths)
        assert info.frame_stride == 320 and info.receptive_field == 400 and info.do_normalize
    else:  # 25 ms fbank frames every 10 ms, stacked in pairs: 20 ms (40 ms after a stride-2 adapter)
        assert info.frame_stride == (640 if "adapter" in case else 320) and info.receptive_field == 560
        assert not info.do_normalize  # the extractor normalises each mel bin over the window itself


@pytest.mark.parametrize("case", ALL)
def test_streaming_with_full_context_equals_offline_frame_for_frame(
    case: str, family: Callable[[str], CtcModel]
) -> None:
    """Left context and look-ahead beyond the utterance: the stream's committed frames are transformers'
    own processor + model output for the whole file (waveform normalised once, by the engine or the
    fbank extractor, never both)."""
    model = family(case)
    audio = noise(3.0, 1)
    pieces: list[tuple[int, np.ndarray]] = []
    session = StreamingSession(
        model.info,
        StreamConfig(chunk_s=0.5, left_context_s=10, lookahead_s=10),
        on_commit=lambda first, logp: pieces.append((first, logp)),
    )
    for i in range(0, audio.size, 777):
        session.push(audio[i : i + 777])
        session.run(model)
    session.finish()
    session.run(model)
    streamed = np.concatenate([p for _, p in pieces])
    assert pieces[0][0] == 0 and streamed.shape[0] == model.info.frames_for(audio.size)
    np.testing.assert_allclose(streamed, hf_offline(model, audio), atol=1e-4)


@pytest.mark.parametrize("case", ALL)
def test_limited_context_windows_commit_every_frame_once(case: str, family: Callable[[str], CtcModel]) -> None:
    """Short windows on the family's frame grid: each window's output has the frames the session
    expects (it raises otherwise) and the stream's frames are committed once each, in order."""
    model = family(case)
    audio = noise(4.0, 2)
    pieces: list[tuple[int, int]] = []
    session = StreamingSession(
        model.info,
        StreamConfig(chunk_s=0.4, left_context_s=0.8, lookahead_s=0.2),
        on_commit=lambda first, logp: pieces.append((first, logp.shape[0])),
    )
    for i in range(0, audio.size, 1600):
        session.push(audio[i : i + 1600])
        session.run(model)
    session.finish()
    events = session.run(model)
    assert len(pieces) > 5
    assert all(a + n == b for (a, n), (b, _) in zip(pieces, pieces[1:]))
    assert sum(n for _, n in pieces) == model.info.frames_for(audio.size)
    assert [e for e in events if isinstance(e, Final)][-1].reason == "stop"


@pytest.mark.parametrize("case", ["w2v-bert", "w2v-bert-adapter"])
def test_fbank_windows_cut_on_the_frame_grid_see_the_files_frames(case: str, family: Callable[[str], CtcModel]) -> None:
    """A window starting at stream frame f (sample f x frame_stride) yields the file's stacked fbank frames
    from the one frame f reads: the virtual conv stack is the extractor's real framing (before its
    per-window mel-bin normalisation)."""
    model = family(case)
    info, extractor = model.info, model.front_end.extractor  # type: ignore[attr-defined]
    audio = noise(2.0, 3)

    def stacked(x: np.ndarray) -> np.ndarray:
        out = extractor(x, sampling_rate=16000, padding=False, do_normalize_per_mel_bins=False, return_tensors="np")
        features: np.ndarray = out["input_features"][0]
        return features

    whole = stacked(audio)
    per_stacked_frame = FBANK_HOP * extractor.stride
    for frame in [1, 2, 7, 30]:
        start = frame * info.frame_stride
        part = stacked(audio[start:])
        first = start // per_stacked_frame
        np.testing.assert_allclose(part, whole[first : first + part.shape[0]], rtol=1e-5, atol=1e-3)


def test_w2v_bert_windows_are_not_normalised_by_the_engine(family: Callable[[str], CtcModel]) -> None:
    """The fbank extractor normalises every mel bin over the window, so the engine leaves the waveform
    as it is; the output then hardly depends on the input level (log-mel turns gain into an offset)."""
    model = family("w2v-bert")
    audio = noise(1.0, 4)
    assert np.array_equal(model.info.normalize(audio), audio)
    quiet, loud = model([audio * 0.2])[0], model([audio * 3.0])[0]
    np.testing.assert_allclose(quiet, loud, atol=1e-3)


@pytest.mark.parametrize("case", ALL)
def test_reuse_paths_follow_the_family_table(case: str, family: Callable[[str], CtcModel]) -> None:
    """Feature reuse where the CNN is wav2vec2's, state reuse only where reuse.py computes the layers
    (not WavLM's gated relative bias, not conformers); the CLI/server fallback keeps what is exact."""
    model = family(case)
    fam = family_of(model.model.config)
    assert model.supports_reuse == fam.feature_reuse == (case not in NO_REUSE_CASES)
    assert model.supports_state_reuse == fam.state_reuse == (case in STATE_CASES)
    expected = "state" if case in STATE_CASES else "features" if case in FEATURE_ONLY_CASES else "recompute"
    assert usable_config(model, SERVE_DEFAULT).reuse == expected
    assert (usable_config(model, SERVE_DEFAULT) is SERVE_DEFAULT) == (case in STATE_CASES)
    audio = model.info.normalize(noise(1.0, 5))
    if case in FEATURE_ONLY_CASES:
        with pytest.raises(ModelLoadError, match="state reuse"):
            model([ReuseInput(audio, 0, None, True)])
    if case in NO_REUSE_CASES:
        with pytest.raises(ModelLoadError, match="reuse"):
            model([ReuseInput(audio, 0, None, False)])


def test_fallbacks_are_logged(family: Callable[[str], CtcModel], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streaming_asr"):
        assert usable_config(family("wavlm"), SERVE_DEFAULT).reuse == "features"
        assert usable_config(family("w2v-bert"), SERVE_DEFAULT).reuse == "recompute"
    assert "feature reuse only" in caplog.text and "recomputing every window" in caplog.text


def test_unknown_families() -> None:
    """A wav2vec2-like model_type not in the table streams without reuse; a non-CTC-audio config is refused."""
    from transformers import BertConfig, UniSpeechSatConfig

    other = family_of(UniSpeechSatConfig())
    assert other.front_end == "waveform" and not other.feature_reuse and not other.state_reuse
    with pytest.raises(ModelLoadError, match="not a streaming CTC family"):
        family_of(BertConfig())
    with pytest.raises(ValueError, match="no tiny config"):
        tiny_ctc_config("bert")


def test_from_config_builds_each_familys_own_head() -> None:
    for family_type in FAMILIES:
        model = CtcModel.from_config(tiny_ctc_config(family_type), name=family_type)
        assert model.model.config.model_type == family_type
        assert model([np.zeros(model.info.samples_for(3), np.float32)])[0].shape == (3, 32)


async def _one_session(url: str, audio: np.ndarray) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        ready = json.loads(await asyncio.wait_for(ws.recv(), 60))
        for i in range(0, len(pcm), 3200):
            await ws.send(pcm[i : i + 3200])
        await ws.send(json.dumps({"type": "stop"}))
        events = []
        try:
            while True:
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
        except websockets.ConnectionClosed:
            pass
        return ready, events, ws.close_code


@pytest.mark.parametrize("case", ALL)
async def test_the_server_serves_every_family(case: str, family: Callable[[str], CtcModel]) -> None:
    """`serve`'s engine (state reuse, fallen back where the family has none) through a real server."""
    model = family(case)
    handle = start_server_thread(forward=model, engine=usable_config(model, SERVE_DEFAULT))
    try:
        ready, events, code = await _one_session(handle.ws_url, noise(2.0, 6))
    finally:
        handle.stop()
    assert ready["type"] == "ready"
    assert (ready["feature_reuse"], ready["state_reuse"]) == (model.supports_reuse, model.supports_state_reuse)
    kinds = [e["type"] for e in events]
    assert code == 1000 and kinds[-2:] == ["final", "closed"] and "error" not in kinds, events[-3:]
    assert events[-2]["reason"] == "stop"
