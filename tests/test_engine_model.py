"""The streaming engine with real wav2vec2 forward passes (tiny random model and the stand-in)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from helpers import cer, espeak_corpus, espeak_rows, standin_model, tiny_model, wer

from streaming_asr.audio import AudioInput, PcmFormat, read_audio, resample
from streaming_asr.config import StreamConfig
from streaming_asr.events import Final
from streaming_asr.model import CtcModel, ModelLoadError
from streaming_asr.offline import transcribe_offline, transcribe_streaming
from streaming_asr.session import StreamingSession

standin = pytest.mark.standin


def test_frame_geometry_matches_the_model() -> None:
    model = tiny_model()
    info = model.info
    assert (info.frame_stride, info.receptive_field, info.sample_rate) == (320, 400, 16000)
    for n in [400, 401, 719, 720, 16000, 16080, 33333]:
        expected = int(model.model._get_feat_extract_output_lengths(n))
        assert info.frames_for(n) == expected
        assert model([np.zeros(n, np.float32)])[0].shape[0] == expected
        assert info.frames_for(info.samples_for(expected)) == expected


@standin
def test_checkpoint_facts_come_from_the_checkpoint() -> None:
    info = standin_model().info
    assert info.vocab[info.blank_id] == "<pad>" and info.vocab[info.delimiter_id] == "|"
    assert info.do_normalize and len(info.vocab) == 32


def test_window_covering_the_utterance_is_identical_to_offline() -> None:
    """Left context and look-ahead >= the utterance: the window is the utterance, bit for bit."""
    model = tiny_model()
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 3).astype(np.float32)
    pieces: list[np.ndarray] = []
    session = StreamingSession(
        model.info,
        StreamConfig(chunk_s=0.5, left_context_s=10, lookahead_s=10),
        on_commit=lambda f, lp: pieces.append(lp),
    )
    for i in range(0, audio.size, 777):
        session.push(audio[i : i + 777])
        session.run(model)
    session.finish()
    session.run(model)
    offline = model([model.info.normalize(audio)])[0]
    np.testing.assert_allclose(np.concatenate(pieces), offline, atol=1e-5)


def test_limited_left_context_bounds_what_the_encoder_sees() -> None:
    model = tiny_model()
    cfg = StreamConfig(chunk_s=0.5, left_context_s=1.0, lookahead_s=0.2)
    session = StreamingSession(model.info, cfg)
    session.push(np.random.default_rng(1).normal(0, 0.1, 16000 * 10).astype(np.float32))
    longest = 0
    while (win := session.next_window()) is not None:
        longest = max(longest, win.audio.size)
        session.accept(win, model([win.audio])[0])
    assert longest == model.info.samples_for(round((1.0 + 0.5 + 0.2) / 0.02))


def _file(n: int = 0) -> tuple[np.ndarray, str]:
    row = espeak_rows(5.0)[n]
    audio, _ = read_audio(row["wav"], 16000)
    return audio, row["reference"]


@standin
def test_streaming_wer_is_close_to_offline_on_tts_dev() -> None:
    ref_all, off_all, st_all = espeak_corpus()
    offline_wer, stream_wer = wer(ref_all, off_all), wer(ref_all, st_all)
    assert offline_wer < 0.9, "the stand-in model should recognise espeak voices"
    assert stream_wer <= offline_wer + 0.08, (offline_wer, stream_wer)
    assert cer(off_all, st_all) < 0.12


@standin
@pytest.mark.parametrize("push", [1, 7, 48000])
def test_odd_push_sizes_give_the_same_text(push: int) -> None:
    model = standin_model()
    audio, _ = _file(1)
    audio = audio[: 16000 * 2]
    baseline = transcribe_streaming(model, model.info, audio, push_samples=1600)
    result = transcribe_streaming(model, model.info, audio, push_samples=push)
    assert result.text == baseline.text and result.text


@standin
@pytest.mark.parametrize("rate", [8000, 44100])
def test_other_input_rates_are_resampled(rate: int) -> None:
    model = standin_model()
    audio, ref = _file(0)
    pcm = (np.clip(resample(audio, 16000, rate), -1, 1) * 32767).astype("<i2")
    inp = AudioInput(PcmFormat(rate, "pcm_s16le", 1), model.info.sample_rate)
    session = StreamingSession(model.info)
    step = rate // 10
    finals: list[Final] = []
    for i in range(0, pcm.size, step):
        session.push(inp.feed(pcm[i : i + step].tobytes()))
        finals += [e for e in session.run(model) if isinstance(e, Final)]
    session.push(inp.flush())
    session.finish()
    finals += [e for e in session.run(model) if isinstance(e, Final)]
    text = " ".join(f.text for f in finals if f.text)
    direct = transcribe_streaming(model, model.info, audio).text
    assert abs(session.total_samples - audio.size) < 0.01 * audio.size
    assert cer(direct, text) < (0.4 if rate == 8000 else 0.15), (direct, text)


@standin
def test_pauses_between_utterances_give_one_final_each() -> None:
    model = standin_model()
    gap = np.zeros(int(16000 * 1.5), np.float32)
    clips = [_file(i)[0] for i in range(3)]
    audio = np.concatenate([gap[:8000], clips[0], gap, clips[1], gap, clips[2], gap[:8000]])
    result = transcribe_streaming(model, model.info, audio)
    assert len(result.finals) == 3, [f.text for f in result.finals]
    assert [f.reason for f in result.finals] == ["silence", "silence", "stop"]  # last gap < endpoint
    bounds = np.cumsum([0.5, clips[0].size / 16000, 1.5, clips[1].size / 16000, 1.5, clips[2].size / 16000])
    spans = [(bounds[0], bounds[1]), (bounds[2], bounds[3]), (bounds[4], bounds[5])]
    for f, (start, end) in zip(result.finals, spans):
        assert start - 0.1 <= f.start < f.end <= end + 0.1
    offline = " ".join(transcribe_offline(model, model.info, c).text for c in clips)
    assert cer(offline, " ".join(f.text for f in result.finals)) < 0.25


def test_missing_local_directory_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelLoadError, match="does not exist"):
        CtcModel.load(str(tmp_path / "nope"))


def test_unreachable_hub_says_how_to_pass_a_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # read at import time, hence a subprocess
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    proc = subprocess.run(
        [sys.executable, "-m", "streaming_asr", "transcribe", str(wav), "--model", "some-org/no-such-model-xyz"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("streaming-asr: error:") and "--model ./model" in lines[-1]
    assert "Traceback" not in proc.stderr


@standin
def test_long_file_offline_uses_chunking_and_keeps_every_utterance() -> None:
    model = standin_model()
    clips = [read_audio(r["wav"], 16000)[0] for r in espeak_rows(6.0)[:9]]
    gap = np.zeros(16000, np.float32)
    audio = np.concatenate([x for c in clips for x in (c, gap)])
    assert audio.size / 16000 > 30  # past the 25 s single window
    windows: list[int] = []
    result = transcribe_offline(lambda ws: (windows.append(len(ws[0])), model(ws))[1], model.info, audio)
    assert len(windows) >= 2 and max(windows) <= 30 * 16000 + 400
    per_clip = " ".join(transcribe_offline(model, model.info, c).text for c in clips)
    assert cer(per_clip, result.text) < 0.15


@standin
def test_int8_quantised_model_still_recognises() -> None:
    from helpers import STANDIN_MODEL

    q = CtcModel.load(str(STANDIN_MODEL), device="cpu", quantize=True)
    audio, _ = _file(0)
    assert (
        cer(
            transcribe_offline(standin_model(), standin_model().info, audio).text,
            transcribe_streaming(q, q.info, audio).text,
        )
        < 0.25
    )
