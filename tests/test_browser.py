"""The captioning page in a real headless Chromium against real servers.

Chromium's fake microphone plays an espeak clip from tts-dev in a loop; the page captures it with
its AudioWorklet and streams it over protocol v1, so these tests cover the whole path from a
browser microphone to captions. The page exposes its state on <body data-state=... data-error=...
data-partials=... data-lines=...>, so the tests wait on states, never on time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from helpers import ServerHandle, cer, sounds_like, tts_dev_rows

CHROMIUM = Path(os.environ.get("STREAMING_ASR_CHROMIUM", "/usr/bin/chromium"))
CLIP_ID = "dev-0020"  # espeak: the stand-in model gets most of it ("THE NOIS OF SOMETHING DROPING ...")
RECOGNISED_WORDS = {"SOMETHING", "NOISE", "LIQUID", "INTO", "DROPPING"}  # a final must hold one of these
WAIT_MS = 60_000  # a ceiling for slow machines, not a timing assertion

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
pytestmark = [pytest.mark.browser, pytest.mark.standin]  # conftest skips `standin` tests without the model


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The espeak clip with silence around it, so every loop of Chromium's fake mic ends in an endpoint."""
    row = next(r for r in tts_dev_rows() if r["id"] == CLIP_ID)
    audio, rate = sf.read(row["wav"], dtype="float32")
    padded = np.concatenate([np.zeros(rate // 2, np.float32), audio, np.zeros(2 * rate, np.float32)])
    path = tmp_path_factory.mktemp("fake-mic") / "speech.wav"
    sf.write(path, padded, rate, subtype="PCM_16")
    return {"path": path, "reference": row["reference"]}


def _launch(playwright: Any, extra_args: list[str]) -> Any:
    """Debian's Chromium (never a downloaded build); Playwright gives every launch a fresh temporary profile."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            *extra_args,
        ],
    )


@pytest.fixture(scope="module")
def playwright_instance() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_instance: Any, clip: dict[str, Any]) -> Iterator[Any]:
    """Chromium whose microphone is the clip, permission granted without a prompt."""
    b = _launch(
        playwright_instance,
        [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={clip['path']}",
        ],
    )
    yield b
    b.close()


class PageProbe:
    """A page plus the problems it reported (uncaught exceptions, CSP violations, console errors)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        text = msg.text
        if "Content Security Policy" in text or (
            msg.type == "error" and "WebSocket connection" not in text and "Failed to load resource" not in text
        ):
            self.problems.append(f"console {msg.type}: {text}")

    def wait(self, selector: str) -> None:
        self.page.wait_for_selector(selector, state="attached", timeout=WAIT_MS)

    def data(self) -> dict[str, str]:
        return self.page.evaluate("() => ({...document.body.dataset})")

    def lines(self) -> list[str]:
        return self.page.locator("#finals li .text").all_inner_texts()


@pytest.fixture()
def open_page(browser: Any) -> Iterator[Callable[..., PageProbe]]:
    """Open the page served at a URL in a fresh browser context; contexts are closed after the test."""
    contexts: list[Any] = []
    probes: list[PageProbe] = []

    def open_(url: str, **options: Any) -> PageProbe:
        """`options` go to the browser context, e.g. ignore_https_errors=True for a self-signed certificate."""
        context = browser.new_context(
            viewport={"width": 1000, "height": 640},
            accept_downloads=True,
            permissions=["clipboard-read", "clipboard-write"],
            **options,
        )
        contexts.append(context)
        probe = PageProbe(context.new_page())
        probes.append(probe)
        probe.page.goto(url)
        probe.wait("body[data-state=idle]")
        return probe

    yield open_
    for context in contexts:
        context.close()
    for probe in probes:
        assert probe.problems == [], probe.problems


def _listen(probe: PageProbe) -> None:
    probe.page.click("#start")
    probe.wait("body[data-state=listening]")


def _stop(probe: PageProbe) -> None:
    probe.page.click("#stop")
    probe.wait("body[data-state=idle]")


def test_page_is_served_with_its_assets_under_the_csp(
    standin_server: ServerHandle, open_page: Callable[[str], PageProbe]
) -> None:
    probe = open_page(standin_server.http_url + "/")
    page = probe.page
    assert page.title().startswith("Live captions")
    assert page.get_attribute("#finals", "aria-live") == "polite"
    assert page.is_enabled("#start") and page.is_disabled("#stop")
    for button in page.locator("button").all():  # every button says what it does
        assert button.inner_text().strip() or button.get_attribute("aria-label"), button
    # The module scripts ran under the server's CSP: the large-caption toggle works from the keyboard.
    page.focus("#large")
    page.keyboard.press("Enter")
    assert page.get_attribute("#large", "aria-pressed") == "true"
    assert "large" in (page.get_attribute("body", "class") or "")


WORKLET_RUN = """async ([rate, batches]) => {
  // The page's worklet in an OfflineAudioContext at `rate`, fed a stereo signal that clips.
  const factor = Math.max(1, Math.ceil(rate / 48000));
  const batch = Math.round(rate / factor * 0.1);
  const length = batches * batch * factor + 256;
  const ctx = new OfflineAudioContext({ numberOfChannels: 1, length, sampleRate: rate });
  await ctx.audioWorklet.addModule("audio-worklet.js");
  const node = new AudioWorkletNode(ctx, "pcm-capture", { processorOptions: { maxRate: 48000, batchSeconds: 0.1 } });
  const input = ctx.createBuffer(2, length, rate);
  const left = input.getChannelData(0), right = input.getChannelData(1);
  for (let i = 0; i < length; i++) {
    left[i] = 1.8 * Math.sin(2 * Math.PI * 440 * i / rate);
    right[i] = 0.6 * Math.sin(2 * Math.PI * 440 * i / rate) + 0.6 * Math.sin(2 * Math.PI * 1000 * i / rate + 1);
  }
  const chunks = [];
  const got = new Promise((resolve) => {
    node.port.onmessage = (e) => {
      if (e.data.type !== "audio") return;
      chunks.push({ bytes: Array.from(new Uint8Array(e.data.buffer)), samples: e.data.samples });
      if (chunks.length === batches) resolve();
    };
  });
  const source = ctx.createBufferSource();
  source.buffer = input;
  source.connect(node);
  node.connect(ctx.destination);
  source.start();
  await ctx.startRendering();
  await got;
  return { chunks, left: Array.from(left), right: Array.from(right) };
}"""


@pytest.mark.parametrize("rate", [44100, 96000])
def test_worklet_sends_clamped_s16le_mono_at_most_48k(
    rate: int, standin_server: ServerHandle, open_page: Callable[[str], PageProbe]
) -> None:
    """The exact samples the page would send: channel mix, decimation above 48 kHz, clamping, byte order."""
    probe = open_page(standin_server.http_url + "/")
    result = probe.page.evaluate(WORKLET_RUN, [rate, 3])
    factor = -(-rate // 48000)
    batch = round(rate / factor * 0.1)
    assert [c["samples"] for c in result["chunks"]] == [batch] * 3  # 100 ms per frame at rate / factor
    sent = np.frombuffer(bytes(b for c in result["chunks"] for b in c["bytes"]), dtype="<i2")

    mono = (np.float32(result["left"]).astype(np.float64) + np.float32(result["right"]).astype(np.float64)) / 2
    mono = mono[: len(sent) * factor].reshape(-1, factor).sum(axis=1) / factor
    clamped = np.clip(mono, -1, 1)
    expected = np.floor(np.where(clamped < 0, clamped * 32768, clamped * 32767) + 0.5).astype(np.int64)
    assert np.abs(sent.astype(np.int64) - expected).max() <= 1
    assert sent.max() == 32767  # the signal clips: clamped, not wrapped around
    assert sent.min() == -32768


def test_live_captions_from_the_microphone(
    standin_server: ServerHandle, clip: dict[str, Any], open_page: Callable[[str], PageProbe]
) -> None:
    probe = open_page(standin_server.http_url + "/")
    page = probe.page
    _listen(probe)
    assert page.inner_text("#conn-text") == "Listening"
    assert page.locator("#mic option").count() > 1  # the picker lists the microphones once allowed
    probe.wait("body:not([data-partials='0'])")
    probe.wait("#finals li:nth-child(2)")  # two loops of the clip, each closed by its trailing silence
    finals = probe.lines()
    words = {w for line in finals for w in line.split()}
    assert words & RECOGNISED_WORDS, finals
    assert min(cer(clip["reference"], line) for line in finals) < 0.5, finals
    stamps = page.locator("#finals li time").all_inner_texts()
    assert all(re.fullmatch(r"\d\d:\d\d", s) for s in stamps), stamps
    assert stamps == sorted(stamps) and stamps[0] != stamps[-1], stamps  # later loops, later times

    with page.expect_download() as info:
        page.click("#download-vtt")
    vtt = Path(info.value.path()).read_text()
    assert vtt.startswith("WEBVTT\n\n1\n")
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}$", vtt, re.M), vtt
    assert finals[0] in vtt
    with page.expect_download() as info:
        page.click("#download-txt")
    txt = Path(info.value.path()).read_text()
    assert txt.splitlines()[0] == f"[{stamps[0]}] {finals[0]}"
    page.click("#copy")
    assert page.evaluate("() => navigator.clipboard.readText()").startswith(txt.splitlines()[0])

    _stop(probe)
    assert page.is_enabled("#start") and page.is_disabled("#stop")
    assert probe.lines()[: len(finals)] == finals  # stopping keeps the transcript


def test_live_captions_over_https_and_wss(
    server_factory: Callable[..., ServerHandle],
    certificate: tuple[Path, Path],
    clip: dict[str, Any],
    open_page: Callable[..., PageProbe],
) -> None:
    """The page served over TLS (self-signed, so the context ignores certificate errors) opens its
    stream with wss: on the same origin, and captions arrive through it."""
    cert, key = certificate
    server = server_factory(tls_cert=str(cert), tls_key=str(key))
    origin = f"127.0.0.1:{server.port}"
    probe = open_page(f"https://{origin}/", ignore_https_errors=True)
    page = probe.page
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    assert page.evaluate("() => [location.protocol, window.isSecureContext]") == ["https:", True]
    _listen(probe)
    probe.wait("body:not([data-partials='0'])")
    probe.wait("#finals li:nth-child(1)")  # one loop of the clip, closed by its trailing silence
    finals = probe.lines()
    assert any(sounds_like(w, line) for w in RECOGNISED_WORDS for line in finals), finals  # spellings flip
    assert min(cer(clip["reference"], line) for line in finals) < 0.5, finals
    _stop(probe)
    assert sockets and all(url.startswith(f"wss://{origin}/v1/stream") for url in sockets), sockets
    assert probe.data()["sessions"] == "1" and probe.data()["error"] == ""


def test_stop_then_start_again(standin_server: ServerHandle, open_page: Callable[[str], PageProbe]) -> None:
    probe = open_page(standin_server.http_url + "/")
    _listen(probe)
    probe.wait("#finals li:nth-child(1)")
    _stop(probe)
    kept = len(probe.lines())
    assert probe.data()["sessions"] == "1"

    _listen(probe)  # a second session on the same page
    probe.wait("body[data-sessions='2']")
    probe.wait(f"#finals li:nth-child({kept + 1})")
    _stop(probe)
    assert len(probe.lines()) > kept
    assert probe.data()["error"] == ""


def test_server_going_away_is_reported_and_retried(
    server_factory: Callable[..., ServerHandle], open_page: Callable[[str], PageProbe]
) -> None:
    server = server_factory()
    probe = open_page(server.http_url + "/")
    _listen(probe)
    server.stop()
    # The page notices, keeps trying, and says it cannot reach the server (its /v1/auth check fails).
    probe.wait("body[data-error=server_unreachable]")
    assert probe.data()["state"] == "connecting"
    assert "Cannot reach the server" in probe.page.inner_text("#message")
    assert probe.page.is_visible("#message")
    _stop(probe)  # the user gives up: retrying ends
    assert probe.page.is_enabled("#start")


def test_refused_token_is_explained(
    server_factory: Callable[..., ServerHandle], open_page: Callable[[str], PageProbe]
) -> None:
    server = server_factory(token="s3cret")
    probe = open_page(server.http_url + "/?token=wrong")
    page = probe.page
    assert page.input_value("#token") == "wrong"  # ?token= pre-fills the field
    page.click("#start")
    probe.wait("body[data-error=token_refused]")
    assert probe.data()["state"] == "error"
    assert "refused the access token" in page.inner_text("#message")
    assert page.is_enabled("#start")

    page.fill("#token", "s3cret")
    page.press("#token", "Enter")  # Enter in the token field starts
    probe.wait("body[data-state=listening]")
    assert probe.data()["error"] == ""
    assert page.is_hidden("#message")
    _stop(probe)


def test_full_server_is_explained_and_retried(
    server_factory: Callable[..., ServerHandle], open_page: Callable[[str], PageProbe]
) -> None:
    server = server_factory(max_sessions=1)
    first = open_page(server.http_url + "/")
    _listen(first)
    second = open_page(server.http_url + "/")
    second.page.click("#start")
    second.wait("body[data-error=server_full]")
    assert "server is full" in second.page.inner_text("#message")
    _stop(first)  # a session frees up: the second page gets in on a retry
    second.wait("body[data-state=listening]")
    assert second.data()["error"] == ""
    _stop(second)


def test_denied_microphone_is_explained(playwright_instance: Any, standin_server: ServerHandle) -> None:
    # No --use-fake-ui-for-media-stream: headless Chromium turns the permission prompt down.
    b = _launch(playwright_instance, ["--use-fake-device-for-media-stream"])
    try:
        page = b.new_context().new_page()
        page.goto(standin_server.http_url + "/")
        page.click("#start")
        page.wait_for_selector("body[data-error=mic_denied]", state="attached", timeout=WAIT_MS)
        assert page.get_attribute("body", "data-state") == "error"
        assert "Microphone access was denied" in page.inner_text("#message")
    finally:
        b.close()
