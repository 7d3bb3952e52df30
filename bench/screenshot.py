"""Take docs/screenshot.png: the captioning page in headless Chromium with live captions.

Starts `streaming-asr serve` with the stand-in model on a free loopback port, plays a few espeak
clips from tts-dev through Chromium's fake microphone, waits for several captions and an open
partial, and saves a small PNG. Needs Debian's chromium and `pip install playwright` (never
`playwright install`).

    python bench/screenshot.py [--out docs/screenshot.png] [--large]
"""

from __future__ import annotations

import argparse
import csv
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
MODEL = SHARED / "models" / "tts-ctc-small"
TTS_DEV = SHARED / "data" / "tts-dev"
CLIPS = ["dev-0020", "dev-0264", "dev-0213", "dev-0252", "dev-0158"]  # espeak lines the stand-in gets mostly right
MAX_BYTES = 300_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake_mic_wav(path: Path) -> None:
    """The clips one after another, each followed by enough silence to end its segment."""
    rows = {r["id"]: r for r in csv.DictReader(open(TTS_DEV / "manifest.tsv", newline=""), delimiter="\t")}
    parts: list[np.ndarray] = []
    rate = 16000
    for clip in CLIPS:
        audio, rate = sf.read(TTS_DEV / rows[clip]["wav"], dtype="float32")
        parts += [np.zeros(rate // 3, np.float32), audio, np.zeros(int(rate * 1.3), np.float32)]
    sf.write(path, np.concatenate(parts), rate, subtype="PCM_16")


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("server did not come up")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    ap.add_argument("--large", action="store_true", help="large-caption mode")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "mic.wav"
        fake_mic_wav(wav)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streaming_asr",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--model",
                str(MODEL),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, server)
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=args.chromium,
                    headless=True,
                    args=[
                        "--use-fake-ui-for-media-stream",
                        "--use-fake-device-for-media-stream",
                        f"--use-file-for-fake-audio-capture={wav}",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--no-first-run",
                    ],
                )
                page = browser.new_context(viewport={"width": 1000, "height": 600}, color_scheme="light").new_page()
                page.goto(url + "/")
                if args.large:
                    page.click("#large")
                page.click("#start")
                page.wait_for_selector(f"#finals li:nth-child({len(CLIPS) - 1})", state="attached", timeout=120_000)
                # Catch a moment with an open partial whose tail is still provisional.
                page.wait_for_selector("#partial .unstable:not(:empty)", state="attached", timeout=60_000)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                page.click("#stop")
                page.wait_for_selector("body[data-state=idle]", state="attached", timeout=30_000)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size} bytes)")
    if size > MAX_BYTES:
        print(f"warning: over {MAX_BYTES} bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
