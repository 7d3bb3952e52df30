"""`transcribe --batch-size N`: batched offline transcription equals one-by-one, in input order.

Group-norm checkpoints batch only equal-length windows (the same arithmetic: identical transcripts,
log-probs equal up to the kernels' last bit); layer-norm ones pad and mask (equal to float
tolerance); the stand-in through the CLI prints the same text and JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import STANDIN_MODEL, espeak_rows, standin_model

from streaming_asr.audio import read_audio
from streaming_asr.model import CtcModel, ModelInput, ModelOutput, tiny_config
from streaming_asr.offline import Transcript, transcribe_offline
from streaming_asr.offline_batch import BatchedTranscriber, transcribe_batch

RATE = 16000


@cache
def group_model() -> CtcModel:
    return CtcModel.from_config(tiny_config(), name="tiny-group", seed=1)


@cache
def layer_model(stable: bool = True) -> CtcModel:
    cfg = tiny_config(feat_extract_norm="layer", do_stable_layer_norm=stable)
    return CtcModel.from_config(cfg, name="tiny-layer", seed=2)


def speechy(seconds: float, seed: int) -> np.ndarray:
    """Noise bursts with pauses: windows the tiny models turn into words and endpoints."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    envelope = (np.sin(np.arange(n) / RATE * 2 * np.pi * rng.uniform(0.3, 0.7)) > -0.3).astype(np.float32)
    return (rng.normal(0, 0.2, n) * envelope).astype(np.float32)


def write_wavs(tmp_path: Path, seconds: Sequence[float]) -> list[np.ndarray]:
    """WAV files of these lengths (16-bit, as files come), read back as the CLI reads them."""
    audios = []
    for i, s in enumerate(seconds):
        path = tmp_path / f"f{i}.wav"
        sf.write(path, speechy(s, seed=i), RATE, subtype="PCM_16")
        audios.append(read_audio(path, RATE)[0])
    return audios


class Counting:
    """The real model, counting the windows it is handed (one-by-one's window count)."""

    def __init__(self, model: CtcModel) -> None:
        self.model, self.info, self.windows = model, model.info, 0

    def __call__(self, windows: Sequence[ModelInput]) -> list[ModelOutput]:
        self.windows += len(windows)
        return self.model(windows)


def one_by_one(model: CtcModel, audios: Sequence[np.ndarray]) -> tuple[list[Transcript], int]:
    counting = Counting(model)
    return [transcribe_offline(counting, model.info, a) for a in audios], counting.windows


def printed(transcripts: Sequence[Transcript]) -> list[object]:
    """What `transcribe --json` prints of each transcript."""
    return [(t.text, round(t.duration_s, 3), [f.to_dict() for f in t.finals]) for t in transcripts]


# ----------------------------------------------------------------- model layer


def test_which_checkpoints_pad() -> None:
    assert not group_model().supports_padding
    assert layer_model().supports_padding and layer_model(stable=False).supports_padding
    with pytest.raises(ValueError, match="group norm"):
        group_model().forward_padded([np.zeros(8000, np.float32), np.zeros(9000, np.float32)])


def test_equal_length_batch_is_each_alone_but_padding_is_not_for_group_norm() -> None:
    model = group_model()
    info = model.info
    windows = [info.normalize(speechy(3.0, seed)) for seed in range(4)]
    batched = model(windows)
    for w, out in zip(windows, batched, strict=True):
        # the same arithmetic; CPU kernels may pick another blocking for another batch (last bit only)
        np.testing.assert_allclose(out, model([w])[0], rtol=0, atol=2e-6)
    # why group norm is bucketed: conv-0's GroupNorm statistics span the zeros of a padded window
    short = windows[0][:20000]
    padded = np.concatenate([short, np.zeros(48000 - short.size, np.float32)])
    alone = model([short])[0]
    assert np.abs(model([padded])[0][: alone.shape[0]] - alone).max() > 1e-2


@pytest.mark.parametrize("stable", [True, False])
def test_padded_masked_batch_equals_each_alone(stable: bool) -> None:
    """transformers' Wav2Vec2 with an attention mask: per-item log-probs as unbatched, to float tolerance."""
    model = layer_model(stable)
    info = model.info
    lengths = [RATE * 3, 23456, 8000, 400, 50321]
    windows = [info.normalize(speechy(n / RATE, seed=n)) for n in lengths]
    padded = model.forward_padded(windows)
    for w, n, out in zip(windows, lengths, padded, strict=True):
        alone = model([w])[0]
        assert out.shape == alone.shape == (info.frames_for(n), len(info.vocab))
        np.testing.assert_allclose(out, alone, atol=1e-4)
    # the check can fail: zero padding without the mask changes the shorter items
    torch = model.torch
    batch = torch.zeros(len(windows), max(lengths))
    for i, w in enumerate(windows):
        batch[i, : w.size] = torch.from_numpy(w)
    with torch.inference_mode():
        unmasked = torch.log_softmax(model.model(batch).logits, dim=-1).numpy()
    short = lengths.index(8000)
    assert np.abs(unmasked[short, : info.frames_for(8000)] - model([windows[short]])[0]).max() > 1e-3


FAMILY_CONFIGS = {  # layer-norm CNN in every one; only the first three mask padding exactly
    "Wav2Vec2Config": True,
    "HubertConfig": True,
    "WavLMConfig": True,
    "Data2VecAudioConfig": False,  # stacked positional convolutions read the padded frames
    "Wav2Vec2ConformerConfig": False,  # so do the convolution modules of its layers
}


@pytest.mark.parametrize("config_name", FAMILY_CONFIGS)
def test_padding_only_where_the_mask_makes_it_exact(config_name: str) -> None:
    import transformers

    tiny = tiny_config()  # its sizes, in the family's config class
    sizes = {k: getattr(tiny, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads")}
    cfg = getattr(transformers, config_name)(
        **sizes,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        vocab_size=32,
        pad_token_id=0,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    model = CtcModel.from_config(cfg, name=config_name, seed=3)
    assert model.supports_padding is FAMILY_CONFIGS[config_name]
    windows = [model.info.normalize(speechy(n / RATE, seed=n)) for n in (40000, 17000, 26000)]
    torch = model.torch
    batch = torch.zeros(len(windows), 40000)
    mask = torch.zeros(len(windows), 40000, dtype=torch.long)
    for i, w in enumerate(windows):
        batch[i, : w.size], mask[i, : w.size] = torch.from_numpy(w), 1
    with torch.inference_mode():
        masked = torch.log_softmax(model.model(batch, attention_mask=mask).logits, dim=-1).numpy()
    worst = max(np.abs(masked[i, : model.info.frames_for(w.size)] - model([w])[0]).max() for i, w in enumerate(windows))
    assert bool(worst < 1e-4) is FAMILY_CONFIGS[config_name]
    if model.supports_padding:
        for w, out in zip(windows, model.forward_padded(windows), strict=True):
            np.testing.assert_allclose(out, model([w])[0], atol=1e-4)


# ----------------------------------------------------------------- files


def test_group_norm_buckets_and_equals_one_by_one_exactly(tmp_path: Path) -> None:
    # three 4 s files (equal length, different audio), two of other lengths, two long ones (many windows)
    seconds = [4.0, 2.5, 4.0, 45.0, 6.2, 4.0, 41.0]
    audios = write_wavs(tmp_path, seconds)
    model = group_model()
    expected, windows = one_by_one(model, audios)
    assert any(t.text for t in expected)
    runner = BatchedTranscriber(model, batch_size=4)
    got = [t for _, t in runner.transcribe(enumerate(audios))]
    assert printed(got) == printed(expected)  # texts, segments, word times and confidences as printed
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(
            [w.confidence for f in g.finals for w in f.words],
            [w.confidence for f in e.finals for w in f.words],
            atol=1e-5,
        )
    stats = runner.stats
    assert stats.windows == windows and stats.padded == 0
    assert max(stats.sizes) <= 4
    assert 3 in stats.sizes  # the three equal-length files shared one forward
    assert 2 in stats.sizes  # so did the two long files' first windows (25 s each)
    assert stats.forwards < windows
    # all lengths different: nothing shares a forward, nothing is padded
    alone = BatchedTranscriber(model, batch_size=4)
    mixed = [audios[i] for i in (1, 0, 4)]
    assert printed([t for _, t in alone.transcribe(enumerate(mixed))]) == printed([expected[i] for i in (1, 0, 4)])
    assert alone.stats.sizes == [1, 1, 1]


def test_layer_norm_pads_and_matches_one_by_one(tmp_path: Path) -> None:
    seconds = [3.1, 7.4, 2.05, 38.0, 5.5]
    audios = write_wavs(tmp_path, seconds)
    model = layer_model()
    expected, windows = one_by_one(model, audios)
    assert any(t.text for t in expected)
    runner = BatchedTranscriber(model, batch_size=3)
    got = [t for _, t in runner.transcribe(enumerate(audios))]
    assert runner.stats.padded > 0 and runner.stats.forwards < windows == runner.stats.windows
    for g, e in zip(got, expected, strict=True):
        assert g.text == e.text and g.duration_s == e.duration_s
        assert [f.text for f in g.finals] == [f.text for f in e.finals]
        gw = [w for f in g.finals for w in f.words]
        ew = [w for f in e.finals for w in f.words]
        assert [(w.word, w.start, w.end) for w in gw] == [(w.word, w.start, w.end) for w in ew]
        np.testing.assert_allclose([w.confidence for w in gw], [w.confidence for w in ew], atol=1e-4)
    # the same model bucketed instead (pad=False) is exact, and shares nothing here
    bucketed = transcribe_batch(model, audios, batch_size=3, pad=False)
    assert printed(bucketed) == printed(expected)


def test_input_order_kept_whatever_finishes_first(tmp_path: Path) -> None:
    seconds = [44.0, 1.0, 3.0, 3.0, 0.01, 20.0, 3.0]  # a long file first; one too short for a frame
    audios = write_wavs(tmp_path, seconds)
    model = group_model()
    expected, _ = one_by_one(model, audios)
    names = [f"file-{i}" for i in range(len(audios))]
    runner = BatchedTranscriber(model, batch_size=2)
    out = list(runner.transcribe(zip(names, audios)))
    assert [k for k, _ in out] == names
    assert printed([t for _, t in out]) == printed(expected)
    assert [t.duration_s for _, t in out] == pytest.approx(seconds, abs=1e-4)


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BatchedTranscriber(group_model(), batch_size=0)
    with pytest.raises(ValueError):
        BatchedTranscriber(group_model(), batch_size=2, pad=True)


# ----------------------------------------------------------------- the stand-in through the CLI


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streaming_asr", "transcribe", "--model", str(STANDIN_MODEL), "--threads", "1", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.standin
def test_standin_same_text_and_json_batched_and_not(tmp_path: Path) -> None:
    rows = espeak_rows()[:4]
    files = [str(r["wav"]) for r in rows]
    for i, r in enumerate(rows[:3]):  # equal-length cuts: the stand-in (group norm) batches these
        cut = tmp_path / f"cut{i}.wav"
        sf.write(cut, sf.read(r["wav"], dtype="float32")[0][: int(2.0 * RATE)], RATE)
        files.insert(2 * i + 1, str(cut))
    plain, batched = cli(*files), cli("--batch-size", "3", *files)
    assert plain.returncode == 0 and batched.returncode == 0, plain.stderr + batched.stderr
    assert batched.stdout == plain.stdout
    assert [line for line in plain.stdout.splitlines() if line.startswith("# ")] == [f"# {f}" for f in files]
    texts = [line for line in plain.stdout.splitlines() if not line.startswith("# ")]
    assert sum(bool(t) for t in texts) >= 5  # real words came out
    plain_json, batched_json = cli("--json", *files), cli("--json", "--batch-size", "4", *files)
    assert batched_json.returncode == 0 and batched_json.stdout == plain_json.stdout
    assert [json.loads(line)["file"] for line in batched_json.stdout.splitlines()] == files
    # the equal-length cuts did share a forward (the same code path, in process)
    runner = BatchedTranscriber(standin_model(), batch_size=3)
    out = list(runner.transcribe((f, read_audio(f, RATE)[0]) for f in files))
    assert 3 in runner.stats.sizes and runner.stats.padded == 0
    assert [t.text for _, t in out] == texts


@pytest.mark.standin
def test_cli_refuses_stream_with_batches_and_reports_unreadable_files(tmp_path: Path) -> None:
    wav = str(espeak_rows()[0]["wav"])
    for bad_args in (["--stream", "--batch-size", "2"], ["--batch-size", "0"]):
        proc = cli(*bad_args, wav)
        assert proc.returncode == 2 and "--batch-size" in proc.stderr and "Traceback" not in proc.stderr
        assert proc.stdout == ""
    bad = tmp_path / "not-audio.wav"
    bad.write_text("hello")
    proc = cli("--batch-size", "2", str(bad), wav)
    assert proc.returncode == 1 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.splitlines()[0] == f"# {wav}" and proc.stdout.splitlines()[1]
