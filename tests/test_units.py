"""Discrete units: `streaming-asr units` gives, per frame and group, the codebook entry whose codevector
the pre-training checkpoint's own quantizer returns (a tiny random Wav2Vec2ForPreTraining saved here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from test_embed import save_checkpoint, signal, wav_file
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model

from streaming_asr.audio import read_audio
from streaming_asr.cli import main
from streaming_asr.model import tiny_config

GROUPS, ENTRIES = 2, 8


@pytest.fixture(scope="module")
def pretraining_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    config = tiny_config(
        num_codevector_groups=GROUPS, num_codevectors_per_group=ENTRIES, codevector_dim=16, proj_codevector_dim=16
    )
    return save_checkpoint(Wav2Vec2ForPreTraining(config), tmp_path_factory.mktemp("pretraining"))


def quantizer_codevectors(model: Any, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the model's own quantizer does with the whole signal: (codevectors (frames, dim), weight_proj logits)."""
    x = Wav2Vec2FeatureExtractor(do_normalize=True)(audio, sampling_rate=16000, return_tensors="pt").input_values
    with torch.inference_mode():
        features = model.wav2vec2(x).extract_features
        codevectors, _ = model.quantizer(features)
        logits = model.quantizer.weight_proj(features)
    return codevectors[0].numpy(), logits[0].numpy()


def units_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["units", "--device", "cpu", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_units_are_the_quantizers_choice(
    pretraining_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = wav_file(tmp_path / "a.wav", 3.2, 16000, 5)
    code, out, err = units_cli(capsys, str(wav), "--model", str(pretraining_dir))
    assert code == 0, err
    answer = json.loads(out)
    assert (answer["frame_s"], answer["groups"], answer["entries"]) == (0.02, GROUPS, ENTRIES)
    units = np.array(answer["units"])
    model = Wav2Vec2ForPreTraining.from_pretrained(pretraining_dir).eval()
    codevectors, logits = quantizer_codevectors(model, read_audio(wav, 16000)[0])
    assert units.shape == (codevectors.shape[0], GROUPS) and units.min() >= 0 and units.max() < ENTRIES
    assert len(np.unique(units[:, 0])) > 1  # a random codebook still uses several entries
    # the codevector the quantizer returned for each frame is the concatenation of the chosen entries
    book = model.quantizer.codevectors[0].detach().numpy()  # (groups * entries, dim / groups)
    rebuilt = np.concatenate([book[g * ENTRIES + units[:, g]] for g in range(GROUPS)], axis=1)
    np.testing.assert_allclose(rebuilt, codevectors, rtol=1e-6, atol=1e-6)
    assert (logits.reshape(-1, GROUPS, ENTRIES).argmax(-1) == units).all()
    # --format npy: the same indices as an int (frames, groups) array
    npy = tmp_path / "u.npy"
    code, out, err = units_cli(capsys, str(wav), "--model", str(pretraining_dir), "--format", "npy", "--out", str(npy))
    assert code == 0 and out == "", err
    saved = np.load(npy)
    assert np.issubdtype(saved.dtype, np.integer) and (saved == units).all()


def test_a_file_at_another_rate_and_a_long_file(
    pretraining_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = wav_file(tmp_path / "b.flac", 2.0, 22050, 6)
    code, out, err = units_cli(capsys, str(wav), "--model", str(pretraining_dir))
    assert code == 0, err
    model = Wav2Vec2ForPreTraining.from_pretrained(pretraining_dir).eval()
    _, logits = quantizer_codevectors(model, read_audio(wav, 16000)[0])
    assert (np.array(json.loads(out)["units"]) == logits.reshape(-1, GROUPS, ENTRIES).argmax(-1)).all()
    long = tmp_path / "long.wav"
    sf.write(long, signal(41.0, 16000), 16000)
    code, out, err = units_cli(capsys, str(long), "--model", str(pretraining_dir))
    assert code == 0, err
    assert len(json.loads(out)["units"]) == (41 * 16000 - 400) // 320 + 1  # every frame once across the windows


def test_checkpoints_without_a_codebook_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = wav_file(tmp_path / "a.wav", 1.0)
    for cls in (Wav2Vec2ForCTC, Wav2Vec2Model):
        model_dir = save_checkpoint(cls(tiny_config()), tmp_path / cls.__name__)
        code, out, err = units_cli(capsys, str(wav), "--model", str(model_dir))
        assert code == 2 and out == "" and "Traceback" not in err
        assert cls.__name__ in err and "quantizer" in err and "Wav2Vec2ForPreTraining" in err


def test_bad_input(pretraining_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = wav_file(tmp_path / "a.wav", 1.0)
    code, _, err = units_cli(capsys, str(wav), "--model", str(pretraining_dir), "--format", "npy")
    assert code == 2 and "--out" in err
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    code, _, err = units_cli(capsys, str(empty), "--model", str(pretraining_dir))
    assert code == 2 and "no audio" in err and "Traceback" not in err


def test_http_units_equal_the_cli(
    pretraining_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], server_factory: Any
) -> None:
    """POST /v1/units on a server started with --units-model gives the CLI's JSON (and .npy by Accept);
    without one it is 404."""
    import io
    import urllib.error
    import urllib.request

    wav = wav_file(tmp_path / "a.wav", 2.0)
    code, out, err = units_cli(capsys, str(wav), "--model", str(pretraining_dir))
    assert code == 0, err
    server = server_factory("tiny", units_model=str(pretraining_dir))

    def post(accept: str) -> tuple[int, bytes]:
        req = urllib.request.Request(
            server.http_url + "/v1/units", data=wav.read_bytes(), headers={"Accept": accept}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    status, body = post("application/json")
    assert status == 200 and json.loads(body) == json.loads(out)
    status, body = post("application/x-npy")
    assert status == 200
    assert np.load(io.BytesIO(body)).tolist() == json.loads(out)["units"]
    plain = server_factory("tiny")
    req = urllib.request.Request(plain.http_url + "/v1/units", data=wav.read_bytes(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(req, timeout=60)
    assert missing.value.code == 404 and json.loads(missing.value.read())["error"] == "not_found"
