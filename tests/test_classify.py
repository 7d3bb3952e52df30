"""Audio classification: `streaming-asr classify` and `POST /v1/classify` give the checkpoint's own id2label
labels with transformers' softmax(logits) as scores, best first (tiny random classifiers saved here)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import ServerHandle
from test_embed import multipart, post, save_checkpoint, signal, wav_bytes, wav_file
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2ForSequenceClassification

from streaming_asr.audio import read_audio
from streaming_asr.chunking import plan_chunks, stitch
from streaming_asr.cli import main
from streaming_asr.model import tiny_config
from streaming_asr.model.encoder import geometry

LABELS = {0: "eng", 1: "deu", 2: "fra", 3: "spa", 4: "ita"}


def classifier_config(**overrides: Any) -> Any:
    return tiny_config(
        num_labels=len(LABELS),
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
        classifier_proj_size=8,
        **overrides,
    )


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(4)
    return save_checkpoint(Wav2Vec2ForSequenceClassification(classifier_config()), tmp_path_factory.mktemp("cls"))


@pytest.fixture(scope="module")
def weighted_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A head over a learned weighted sum of all hidden states (SUPERB's setup)."""
    torch.manual_seed(5)
    model = Wav2Vec2ForSequenceClassification(classifier_config(use_weighted_layer_sum=True))
    with torch.no_grad():
        model.layer_weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
    return save_checkpoint(model, tmp_path_factory.mktemp("weighted"))


def own_scores(model_dir: Path, audio: np.ndarray) -> dict[str, float]:
    """transformers' own softmax(logits) by label, for the whole signal."""
    model = Wav2Vec2ForSequenceClassification.from_pretrained(model_dir).eval()
    x = Wav2Vec2FeatureExtractor(do_normalize=True)(audio, sampling_rate=16000, return_tensors="pt").input_values
    with torch.inference_mode():
        probs = torch.softmax(model(x).logits[0], dim=-1).numpy()
    return {model.config.id2label[i]: float(p) for i, p in enumerate(probs)}


def classify_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[Any], str]:
    code = main(["classify", "--device", "cpu", *args])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


@pytest.mark.parametrize("which", ["plain", "weighted"])
def test_labels_and_softmax_scores_are_the_models_own(
    which: str, classifier_dir: Path, weighted_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = classifier_dir if which == "plain" else weighted_dir
    files = [wav_file(tmp_path / "a.wav", 2.5, 16000, 7), wav_file(tmp_path / "b.wav", 1.2, 44100, 8)]
    code, answers, err = classify_cli(capsys, *map(str, files), "--model", str(model_dir), "--top-k", "0")
    assert code == 0 and len(answers) == 2, err
    for path, answer in zip(files, answers):
        want = own_scores(model_dir, read_audio(path, 16000)[0])
        assert sorted(a["label"] for a in answer) == sorted(LABELS.values())
        scores = [a["score"] for a in answer]
        assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
        for a in answer:
            assert a["score"] == pytest.approx(want[a["label"]], rel=1e-4, abs=1e-6)
    assert answers[0] != answers[1]
    code, top, err = classify_cli(capsys, str(files[0]), "--model", str(model_dir), "--top-k", "2")
    assert code == 0 and top[0] == answers[0][:2], err
    code, default, err = classify_cli(capsys, str(files[0]), "--model", str(model_dir))
    assert code == 0 and len(default[0]) == 5, err


def test_a_long_file_pools_every_frame_from_its_window(
    classifier_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over 30 s: per-frame projections from the offline windows, their mean over the whole file, the classifier."""
    wav = wav_file(tmp_path / "long.wav", 52.0, 16000, 9)
    audio = read_audio(wav, 16000)[0]
    model = Wav2Vec2ForSequenceClassification.from_pretrained(classifier_dir).eval()
    fe = Wav2Vec2FeatureExtractor.from_pretrained(classifier_dir)
    chunks = plan_chunks(audio.size, geometry(model.config, fe, "cls"))
    assert len(chunks) == 3
    with torch.inference_mode():
        frames = []
        for c in chunks:
            x = fe(audio[c.start : c.end], sampling_rate=16000, return_tensors="pt").input_values
            frames.append(model.projector(model.wav2vec2(x).last_hidden_state)[0].numpy())
        pooled = torch.from_numpy(stitch(chunks, frames).mean(axis=0))
        want = torch.softmax(model.classifier(pooled), dim=-1).numpy()
    code, answers, err = classify_cli(capsys, str(wav), "--model", str(classifier_dir), "--top-k", "0")
    assert code == 0, err
    for a in answers[0]:
        assert a["score"] == pytest.approx(float(want[list(LABELS.values()).index(a["label"])]), rel=1e-4, abs=1e-6)


def test_bad_input_and_checkpoints_without_a_head(
    classifier_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = wav_file(tmp_path / "a.wav", 1.0)
    ctc_dir = save_checkpoint(Wav2Vec2ForCTC(tiny_config()), tmp_path / "ctc")
    code, out, err = classify_cli(capsys, str(wav), "--model", str(ctc_dir))
    assert code == 2 and not out and "Wav2Vec2ForCTC" in err and "classification head" in err
    code, out, err = classify_cli(capsys, str(wav), "--model", str(classifier_dir), "--top-k", "-1")
    assert code == 2 and not out and "--top-k" in err
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    code, out, err = classify_cli(capsys, str(wav), str(empty), "--model", str(classifier_dir))
    assert code == 2 and not out and "no audio" in err and "Traceback" not in err  # checked before any output
    with pytest.raises(SystemExit):  # --model is required: argparse's usage error (exit 2)
        main(["classify", str(wav)])


# ------------------------------------------------------------------ HTTP
def test_http_classify(
    classifier_dir: Path,
    server_factory: Callable[..., ServerHandle],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    server = server_factory("tiny", classifier_model=str(classifier_dir))
    audio = signal(2.0, 16000, 10)
    wav = wav_bytes(audio, 16000)
    status, headers, body = post(server, "/v1/classify?top_k=0", wav, token=None)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["duration_s"] == 2.0 and answer["model"] == str(classifier_dir)
    want = own_scores(classifier_dir, sf.read(io.BytesIO(wav), dtype="float32")[0])
    assert [a["label"] for a in answer["labels"]] == sorted(want, key=lambda k: -want[k])
    for a in answer["labels"]:
        assert a["score"] == pytest.approx(want[a["label"]], rel=1e-4, abs=1e-6)
    (tmp_path / "a.wav").write_bytes(wav)  # the CLI gives the same answer for the same file
    code, cli, err = classify_cli(capsys, str(tmp_path / "a.wav"), "--model", str(classifier_dir), "--top-k", "0")
    assert code == 0 and [a["label"] for a in cli[0]] == [a["label"] for a in answer["labels"]], err
    form, ctype = multipart([("top_k", b"2"), ("file", wav)])
    status, _, body = post(server, "/v1/classify", form, {"Content-Type": ctype}, token=None)
    assert status == 200 and json.loads(body)["labels"] == answer["labels"][:2]
    pcm = (sf.read(io.BytesIO(wav), dtype="int16")[0]).astype("<i2").tobytes()
    status, _, body = post(server, "/v1/classify?sample_rate=16000&top_k=0", pcm, token=None)
    assert status == 200 and json.loads(body)["labels"] == answer["labels"]
    for query, code_name in [("?top_k=-1", "invalid_parameter"), ("?top_k=two", "invalid_parameter")]:
        status, _, body = post(server, "/v1/classify" + query, wav, token=None)
        assert status == 400 and json.loads(body)["error"] == code_name
    status, _, body = post(server, "/v1/classify", b"\x00" * 100 + b"garbage", token=None)
    assert status == 415 and json.loads(body)["error"] == "not_audio"
