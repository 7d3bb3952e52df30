"""Embeddings: `streaming-asr embed` and `POST /v1/embed` equal transformers' own `hidden_states`.

Tiny random checkpoints are built and saved here (a CTC one and a bare encoder); the HTTP tests
run a real server on the tiny random CTC model at fp32 and compare with that model's own outputs.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import ServerHandle, tiny_model
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Model

from streaming_asr.audio import read_audio, resample
from streaming_asr.chunking import plan_chunks, stitch
from streaming_asr.cli import main
from streaming_asr.model import tiny_config
from streaming_asr.model.encoder import geometry

TOKEN = "embed-test-token"


def signal(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A chirp with a little noise: every frame differs, so a wrong frame cannot pass."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * 180 * t * (1 + t / 4)) + 0.05 * noise).astype(np.float32)


def wav_file(path: Path, seconds: float, rate: int = 16000, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, signal(seconds, rate, seed), rate, subtype="PCM_16")
    return path


def save_checkpoint(model: Any, directory: Path) -> Path:
    torch.manual_seed(0)
    model.eval().save_pretrained(directory)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def ctc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    return save_checkpoint(Wav2Vec2ForCTC(tiny_config()), tmp_path_factory.mktemp("ctc"))


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(2)
    return save_checkpoint(Wav2Vec2Model(tiny_config(num_hidden_layers=3)), tmp_path_factory.mktemp("bare"))


def reference(model: Any, audio: np.ndarray) -> list[np.ndarray]:
    """transformers' own hidden_states (each (frames, dim)) for the whole signal, feature extractor included."""
    x = Wav2Vec2FeatureExtractor(do_normalize=True)(audio, sampling_rate=16000, return_tensors="pt").input_values
    with torch.inference_mode():
        return [h[0].numpy() for h in model(x, output_hidden_states=True).hidden_states]


def embed_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["embed", "--device", "cpu", *args])
    return code, capsys.readouterr().err


# ------------------------------------------------------------------- CLI
@pytest.mark.parametrize("which", ["ctc", "bare"])
def test_cli_vectors_equal_transformers_hidden_states(
    which: str, ctc_dir: Path, encoder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = ctc_dir if which == "ctc" else encoder_dir
    model = (Wav2Vec2ForCTC if which == "ctc" else Wav2Vec2Model).from_pretrained(model_dir).eval()
    files = [wav_file(tmp_path / "a.wav", 2.3, 16000, 1), wav_file(tmp_path / "b.flac", 1.7, 8000, 2)]  # b resampled
    refs = [reference(model, read_audio(f, 16000)[0]) for f in files]
    last = len(refs[0]) - 1
    out = tmp_path / "e.npz"
    for extra, pick in [
        ([], lambda r: r[last]),
        (["--layer", "1"], lambda r: r[1]),
        (["--layer", "0", "--pool", "mean"], lambda r: r[0].mean(axis=0)),
        (["--layers", "all"], lambda r: np.stack(r)),
        (["--layers", "all", "--pool", "mean"], lambda r: np.stack(r).mean(axis=1)),
    ]:
        code, err = embed_cli(capsys, *map(str, files), "--model", str(model_dir), "--out", str(out), *extra)
        assert code == 0, err
        got = np.load(out)
        assert sorted(got.files) == ["a.wav", "b.flac"]
        for f, r in zip(files, refs):
            want = pick(r)
            assert got[f.name].dtype == np.float32 and got[f.name].shape == want.shape, extra
            np.testing.assert_allclose(got[f.name], want, rtol=1e-5, atol=2e-5, err_msg=str(extra))


def test_long_files_use_the_offline_windows(ctc_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 47 s file: every frame from its window of chunking.plan_chunks (normalised on its own), stitched."""
    wav = wav_file(tmp_path / "long.wav", 47.0)
    model = Wav2Vec2ForCTC.from_pretrained(ctc_dir).eval()
    audio = read_audio(wav, 16000)[0]
    info = geometry(model.config, Wav2Vec2FeatureExtractor.from_pretrained(ctc_dir), "ctc")
    chunks = plan_chunks(audio.size, info)
    assert len(chunks) == 3
    want = stitch(chunks, [reference(model, audio[c.start : c.end])[-1] for c in chunks])
    code, err = embed_cli(capsys, str(wav), "--model", str(ctc_dir), "--out", str(tmp_path / "l.npz"))
    assert code == 0, err
    got = np.load(tmp_path / "l.npz")["long.wav"]
    assert got.shape == (info.frames_for(audio.size), 32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
    whole = reference(model, audio)[-1]  # one 47 s forward differs: the windowing is real
    assert not np.allclose(got, whole, atol=1e-3)


def test_names_that_collide_are_keyed_by_path(
    ctc_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, two, other = (wav_file(tmp_path / d, 0.5, seed=i) for i, d in enumerate(["x/a.wav", "y/a.wav", "y/c.wav"]))
    out = tmp_path / "k.npz"
    code, err = embed_cli(
        capsys, str(one), str(two), str(other), "--model", str(ctc_dir), "--out", str(out), "--pool", "mean"
    )
    assert code == 0, err
    got = np.load(out)
    assert sorted(got.files) == sorted([str(one), str(two), "c.wav"])
    assert not np.allclose(got[str(one)], got[str(two)])
    code, err = embed_cli(capsys, str(other), str(other), "--model", str(ctc_dir), "--out", str(out))
    assert code == 2 and "twice" in err


def test_bad_input_is_exit_2_with_a_message(ctc_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = wav_file(tmp_path / "good.wav", 1.0)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    short = tmp_path / "short.wav"
    sf.write(short, signal(0.01, 16000), 16000)  # 160 samples: less than one frame's 400
    text = tmp_path / "text.wav"
    text.write_text("not audio")
    out = str(tmp_path / "o.npz")
    cases = [
        ([str(good), "--layer", "3"], "out of range"),  # the tiny model has hidden states 0 ... 2
        ([str(good), "--layer", "-1"], "out of range"),
        ([str(empty)], "no audio"),
        ([str(text)], "cannot read"),
        ([str(tmp_path / "missing.wav")], "cannot read"),
        ([str(short)], "one frame needs"),
    ]
    for args, words in cases:
        code, err = embed_cli(capsys, *args, "--model", str(ctc_dir), "--out", out)
        assert code == 2 and words in err and "Traceback" not in err, (args, err)
    code, err = embed_cli(capsys, str(good), "--model", str(ctc_dir), "--out", str(tmp_path / "no" / "o.npz"))
    assert code == 2 and "does not exist" in err
    code, err = embed_cli(capsys, str(good), "--model", str(tmp_path / "no-model"), "--out", out)
    assert code == 2 and "does not exist" in err
    assert not Path(out).exists()


# ------------------------------------------------------------------ HTTP
@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return server_factory("tiny", token=TOKEN)  # the tiny random CTC model, fp32


def post(
    server: ServerHandle,
    path: str,
    body: bytes | Iterable[bytes],
    headers: dict[str, str] | None = None,
    token: str | None = TOKEN,
) -> tuple[int, dict[str, str], bytes]:
    h = {"Content-Type": "application/octet-stream", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(server.http_url + path, data=body, headers=h, method="POST")  # type: ignore[arg-type]
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wav_bytes(audio: np.ndarray, rate: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def served_reference(audio: np.ndarray) -> list[np.ndarray]:
    return reference(tiny_model().model, audio)


def test_http_vectors_equal_the_serving_models_hidden_states(server: ServerHandle) -> None:
    assert tiny_model().precision == "fp32"
    wav = wav_bytes(signal(2.1, 16000, 3), 16000)
    audio = sf.read(io.BytesIO(wav), dtype="float32")[0]
    ref = served_reference(audio)
    status, headers, body = post(server, "/v1/embed?pool=mean", wav)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["layers"] == [2] and answer["pool"] == "mean" and answer["shape"] == [32]
    assert answer["frames"] == ref[-1].shape[0] and answer["precision"] == "fp32"
    np.testing.assert_allclose(np.array(answer["embedding"]), ref[-1].mean(axis=0), rtol=1e-5, atol=2e-5)
    status, headers, body = post(server, "/v1/embed?layer=1", wav)  # frames: .npy by default
    assert status == 200 and headers["Content-Type"].startswith("application/x-npy")
    np.testing.assert_allclose(np.load(io.BytesIO(body)), ref[1], rtol=1e-5, atol=2e-5)
    status, _, body = post(server, "/v1/embed?layers=all&pool=mean", wav)
    np.testing.assert_allclose(
        np.array(json.loads(body)["embedding"]), np.stack(ref).mean(axis=1), rtol=1e-5, atol=2e-5
    )
    status, headers, body = post(server, "/v1/embed?layer=0", wav, {"Accept": "application/json"})
    assert status == 200 and json.loads(body)["shape"] == list(ref[0].shape)
    np.testing.assert_allclose(np.array(json.loads(body)["embedding"]), ref[0], rtol=1e-5, atol=2e-5)
    status, headers, body = post(server, "/v1/embed?pool=mean", wav, {"Accept": "application/x-npy"})
    assert status == 200 and np.load(io.BytesIO(body)).shape == (32,)
    # the same samples as raw PCM, and as a multipart form with the options as fields
    pcm = (audio * 32768).astype("<i2").tobytes()
    status, _, body = post(server, "/v1/embed?pool=mean&sample_rate=16000", pcm)
    assert status == 200 and json.loads(body)["embedding"] == answer["embedding"]
    form, ctype = multipart([("pool", b"mean"), ("file", wav)])
    status, _, body = post(server, "/v1/embed", form, {"Content-Type": ctype})
    assert status == 200 and json.loads(body)["embedding"] == answer["embedding"]


def test_http_resamples_other_rates(server: ServerHandle) -> None:
    audio8k = signal(1.5, 8000, 4)
    flac = wav_bytes(audio8k, 8000, "FLAC")
    status, _, body = post(server, "/v1/embed?pool=mean", flac)
    assert status == 200
    at16k = resample(sf.read(io.BytesIO(flac), dtype="float32")[0], 8000, 16000)
    np.testing.assert_allclose(
        np.array(json.loads(body)["embedding"]), served_reference(at16k)[-1].mean(axis=0), rtol=1e-4, atol=1e-4
    )
    pcm = (sf.read(io.BytesIO(flac), dtype="int16")[0]).astype("<i2").tobytes()
    status, _, body2 = post(server, "/v1/embed?pool=mean&sample_rate=8000", pcm)
    assert status == 200
    np.testing.assert_allclose(json.loads(body2)["embedding"], json.loads(body)["embedding"], rtol=1e-4, atol=1e-4)


def test_http_errors(server: ServerHandle, server_factory: Callable[..., ServerHandle]) -> None:
    wav = wav_bytes(signal(1.0, 16000), 16000)

    def error(status: int, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        assert headers["Content-Type"].startswith("application/json")
        answer = json.loads(body)
        assert set(answer) == {"error", "message"} and answer["message"]
        return status, answer["error"]

    assert error(*post(server, "/v1/embed?layer=3", wav)) == (400, "invalid_layer")
    assert error(*post(server, "/v1/embed?layer=x", wav)) == (400, "invalid_parameter")
    assert error(*post(server, "/v1/embed?pool=max", wav)) == (400, "invalid_parameter")
    assert error(*post(server, "/v1/embed?layers=all&layer=1", wav)) == (400, "invalid_parameter")
    assert error(*post(server, "/v1/embed", b'{"audio": "no"}', {"Content-Type": "application/json"})) == (
        415,
        "not_audio",
    )
    assert error(*post(server, "/v1/embed", b"")) == (400, "empty_audio")
    assert error(*post(server, "/v1/embed", wav_bytes(signal(0.01, 16000), 16000))) == (400, "audio_too_short")
    assert error(*post(server, "/v1/embed?sample_rate=16000", b"\x01\x02\x03")) == (400, "unaligned_audio")
    assert error(*post(server, "/v1/embed?sample_rate=3", b"\x01\x02")) == (400, "unsupported_sample_rate")
    form, ctype = multipart([("colour", b"red"), ("file", wav)])
    assert error(*post(server, "/v1/embed", form, {"Content-Type": ctype})) == (400, "unknown_field")
    assert error(*post(server, "/v1/embed", wav, token=None)) == (401, "unauthorized")
    assert error(*post(server, "/v1/embed", wav, token="wrong")) == (401, "unauthorized")
    assert error(*post(server, "/v1/classify", wav)) == (404, "not_found")  # no --classifier-model
    small = server_factory("tiny", max_upload_mb=0.01)  # 10 KiB; one second of 16 kHz WAV is 32 KB
    assert error(*post(small, "/v1/embed", wav, token=None)) == (413, "too_large")
    chunks = iter([wav[i : i + 4096] for i in range(0, len(wav), 4096)])  # no Content-Length: chunked
    assert error(*post(small, "/v1/embed", chunks, token=None)) == (413, "too_large")
    status, _, _ = post(small, "/v1/embed?pool=mean", wav_bytes(signal(0.25, 16000), 16000), token=None)  # fits
    assert status == 200


def multipart(parts: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "EmBeDbOuNdArY"
    out = b""
    for name, value in parts:
        filename = '; filename="a.wav"' if name == "file" else ""
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode()
            + value
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
