"""`python -m clients.file` as a user runs it: a subprocess against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from helpers import TTS_DEV, cer, sounds_like

REPO = Path(__file__).resolve().parents[1]
WAV = TTS_DEV / "wav" / "dev-0072.wav"  # espeak "MAKE A FORCED LANDING", 16 kHz mono
WAV_2 = TTS_DEV / "wav" / "dev-0066.wav"  # espeak "BUILD A MILLION DOLLAR BUSINESS"


def run_client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients.file", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_fast_json_lines(standin_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # a stereo 44.1 kHz FLAC: sent at its own rate and channel count, the server converts
    audio, rate = sf.read(WAV_2, dtype="float32")
    resampled = np.interp(np.arange(0, len(audio), rate / 44100), np.arange(len(audio)), audio)
    flac = tmp_path / "stereo.flac"
    sf.write(flac, np.stack([resampled, resampled], axis=1), 44100)

    result = run_client(str(WAV), str(flac), "--url", standin_server.ws_url, "--fast", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows and all(r["type"] == "final" for r in rows)
    by_file = {str(WAV): [], str(flac): []}  # type: dict[str, list[dict]]
    for r in rows:
        by_file[r["file"]].append(r)
    for path, reference in [(str(WAV), "MAKE A FORCED LANDING"), (str(flac), "BUILD A MILLION DOLLAR BUSINESS")]:
        finals = by_file[path]
        assert finals[-1]["reason"] == "stop"
        text = " ".join(f["text"] for f in finals if f["text"])
        assert cer(reference, text) < 0.5, (path, text)
        words = [w for f in finals for w in f["words"]]
        assert [w["word"] for w in words] == text.split()
        assert all(f["start"] <= f["end"] for f in finals)


def test_text_output_and_vtt_file(standin_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    vtt = tmp_path / "out.vtt"
    result = run_client(str(WAV), "--url", standin_server.ws_url, "--chunk-ms", "50", "--output", str(vtt))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith("[00:0") and "] " in line for line in lines)
    assert sounds_like("MAKE", lines[0])
    assert "\r" not in result.stdout  # no live partial line when stdout is not a terminal
    text = vtt.read_text()
    assert text.startswith("WEBVTT\n\n") and " --> " in text and sounds_like("MAKE", text)


def test_connection_errors_exit_nonzero_with_one_line(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    refused = run_client(str(WAV), "--url", "ws://127.0.0.1:9/v1/stream")
    assert refused.returncode != 0 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1 and "cannot connect" in refused.stderr

    server = server_factory(token="s3cret")
    denied = run_client(str(WAV), "--url", server.ws_url, "--token", "nope")
    assert denied.returncode != 0
    assert len(denied.stderr.strip().splitlines()) == 1 and "401" in denied.stderr
    allowed = run_client(str(WAV), "--url", server.ws_url, "--token", "s3cret", "--json")
    assert allowed.returncode == 0, allowed.stderr

    missing = run_client(str(tmp_path / "nope.wav"), "--url", server.ws_url)
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1
