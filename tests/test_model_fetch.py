"""Model fetching an operator can plan: the cache first, one hub probe, a clear error in seconds, and
`streaming-asr download` for offline hosts. No test touches the real hub: an unreachable
endpoint is a closed local port, the hub itself (the external boundary) is a fake loader."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import STANDIN_MODEL, TTS_DEV
from streaming_asr.model import hub
from streaming_asr.model.info import ModelLoadError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streaming_asr", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


@pytest.mark.parametrize("extra,words", [({}, "cannot be reached"), ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE")])
def test_unreachable_hub_fails_at_once_with_the_way_out(tmp_path: Path, extra: dict[str, str], words: str) -> None:
    wav = str(next((TTS_DEV / "wav").glob("*.wav")))
    proc = run_cli("transcribe", "--model", "facebook/wav2vec2-base-960h", "--no-progress", wav,
                   HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", **extra)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert words in proc.stderr and "streaming-asr download facebook/wav2vec2-base-960h" in proc.stderr
    assert "retry" not in proc.stderr.lower()  # one probe, no retry loop


def test_the_cache_is_used_without_touching_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def cached(name: str, **kw: Any) -> str:
        calls.append(kw)
        return "model"

    monkeypatch.setattr(hub, "hub_reachable", lambda name: pytest.fail("probed the hub"))
    assert hub.load_from_hub("org/m", cached) == "model" and calls == [{"local_files_only": True}]


def test_not_cached_then_one_probe_then_download(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def hub_only(name: str, **kw: Any) -> str:
        calls.append(kw)
        if kw.get("local_files_only"):
            raise OSError("not in cache")
        return "downloaded"

    probes: list[str] = []
    monkeypatch.setattr(hub, "hub_reachable", lambda name: probes.append(name))
    assert hub.load_from_hub("org/m", hub_only) == "downloaded" and probes == ["org/m"] and calls[-1] == {}
    monkeypatch.setattr(hub, "hub_reachable", lambda name: "the hub at X cannot be reached (down)")
    with pytest.raises(ModelLoadError, match="cannot be reached"):
        hub.load_from_hub("org/m", hub_only)


@pytest.mark.standin
def test_download_saves_a_directory_serve_can_load(tmp_path: Path) -> None:
    out = tmp_path / "model"
    proc = run_cli("download", str(STANDIN_MODEL), "--to", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "config.json").is_file() and (out / "vocab.json").is_file()
    from streaming_asr.model import CtcModel

    saved, original = CtcModel.load(str(out), device="cpu"), CtcModel.load(str(STANDIN_MODEL), device="cpu")
    assert saved.info.vocab == original.info.vocab and saved.info.blank_id == original.info.blank_id
