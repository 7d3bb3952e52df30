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
    return subprocess.run(
        [sys.executable, "-m", "streaming_asr", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("extra,words", [({}, "cannot be reached"), ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE")])
def test_unreachable_hub_fails_at_once_with_the_way_out(tmp_path: Path, extra: dict[str, str], words: str) -> None:
    wav = str(next((TTS_DEV / "wav").glob("*.wav")))
    proc = run_cli(
        "transcribe",
        "--model",
        "facebook/wav2vec2-base-960h",
        "--no-progress",
        wav,
        HF_HOME=str(tmp_path / "hf"),
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
        **extra,
    )
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


def test_the_port_opens_before_the_model_loads(tmp_path: Path) -> None:
    """While the model loads (here: a hub probe the test holds), the port answers: live, readiness
    `loading`, everything else 503; a load that fails still ends the process with the clear error."""
    import http.server
    import json
    import threading
    import time
    import urllib.error
    import urllib.request

    release = threading.Event()

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 - the http.server API
            release.wait(60)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    hub_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=hub_server.serve_forever, daemon=True).start()
    port = closed_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streaming_asr",
            "serve",
            "--model",
            "org/not-cached",
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "HF_HOME": str(tmp_path / "hf"),
            "HF_ENDPOINT": f"http://127.0.0.1:{hub_server.server_address[1]}",
        },
    )

    def status(path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        for _ in range(600):  # until the placeholder listens
            try:
                ready = status("/health/ready")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
                time.sleep(0.05)
        assert ready == (503, {"ready": False, "reason": "loading"})
        assert status("/health/live")[0] == 200 and status("/v1/stream")[0] == 503
        release.set()
        _, err = proc.communicate(timeout=60)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
        hub_server.shutdown()
    assert proc.returncode == 2 and "has no model 'org/not-cached'" in err
