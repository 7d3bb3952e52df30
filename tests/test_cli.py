"""`streaming-asr transcribe`: offline and streaming give the same words; JSON output; bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import STANDIN_MODEL, cer, espeak_rows

pytestmark = pytest.mark.standin


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streaming_asr", "transcribe", "--model", str(STANDIN_MODEL), "--threads", "1", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_offline_and_stream_agree_and_json_has_word_times(tmp_path: Path) -> None:
    rows = espeak_rows()[:2]
    wav = tmp_path / "joined.flac"
    audio = np.concatenate(
        [
            sf.read(rows[0]["wav"], dtype="float32")[0],
            np.zeros(24000, np.float32),
            sf.read(rows[1]["wav"], dtype="float32")[0],
        ]
    )
    sf.write(wav, audio, 16000)
    offline = run(str(wav))
    stream = run(str(wav), "--stream", "--push-ms", "30")
    assert offline.returncode == 0 and stream.returncode == 0, offline.stderr + stream.stderr
    off_text, st_text = offline.stdout.strip().splitlines()[-1], stream.stdout.strip().splitlines()[-1]
    assert off_text and cer(off_text, st_text) < 0.15
    out = json.loads(run(str(wav), "--json").stdout.strip().splitlines()[-1])
    assert out["text"] == off_text and len(out["segments"]) == 2
    words = [w for s in out["segments"] for w in s["words"]]
    assert all(0 <= w["start"] < w["end"] <= out["duration"] for w in words)
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)


def test_several_files_and_an_unreadable_one(tmp_path: Path) -> None:
    bad = tmp_path / "not-audio.wav"
    bad.write_text("hello")
    good = espeak_rows()[0]["wav"]
    proc = run(str(good), str(bad))
    assert proc.returncode == 1
    assert f"# {good}" in proc.stdout and "cannot read" in proc.stderr and "Traceback" not in proc.stderr
