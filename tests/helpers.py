"""Shared test helpers: paths to ../shared, the tts-dev manifest, WER/CER, a server in a thread."""

from __future__ import annotations

import asyncio
import sys
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from streaming_asr.textmetrics import cer, edit_distance, wer  # noqa: F401  (re-exported for tests)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from common import SHARED, STANDIN_MODEL, TTS_DEV, tts_dev_rows  # noqa: E402,F401  (one place for the data paths)

HUMAN = SHARED / "data" / "human"


def espeak_rows(max_duration: float = 6.0) -> list[dict[str, Any]]:
    return [r for r in tts_dev_rows() if r["voice"].startswith("espeak") and r["duration_s"] <= max_duration]


@cache
def standin_model():  # type: ignore[no-untyped-def]
    from streaming_asr.model import CtcModel

    return CtcModel.load(str(STANDIN_MODEL), device="cpu")


@cache
def tiny_model():  # type: ignore[no-untyped-def]
    from streaming_asr.model import CtcModel, tiny_config

    return CtcModel.from_config(tiny_config(), name="tiny-random")


@dataclass
class ServerHandle:
    """A real server on 127.0.0.1 running in a background thread with its own event loop."""

    port: int
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    server: Any

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self.server.stop(timeout=10), self.loop)
            try:
                fut.result(timeout=30)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(timeout=30)


def start_server_thread(model: str = "standin", forward: Any = None, **settings: Any) -> ServerHandle:
    """Start AsrServer on a free port; `settings` are ServerSettings fields (engine=StreamConfig(...) too).

    `forward` replaces the model's forward (it needs the model's `.info`), e.g. a deliberately slowed one.
    """
    from streaming_asr.server import AsrServer, ServerSettings

    if forward is None:
        forward = standin_model() if model == "standin" else tiny_model()
    settings.setdefault("port", 0)
    settings.setdefault("max_load", 0.0)  # no capacity admission unless a test is about it (CI machines vary)
    settings.setdefault("max_queue_delay_s", 0.0)
    server = AsrServer(forward, forward.info, ServerSettings(host="127.0.0.1", **settings))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    error: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:  # noqa: BLE001
            error.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="asr-server", daemon=True)
    thread.start()
    started.wait(60)
    if error:
        raise error[0]
    return ServerHandle(server.port, thread, loop, server)


@cache
def _espeak_offline(count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """References and the stand-in's offline texts of the first `count` short espeak files (computed once)."""
    from streaming_asr.audio import read_audio
    from streaming_asr.offline import transcribe_offline

    model = standin_model()
    rows = espeak_rows(6.0)[:count]
    return (
        tuple(r["reference"] for r in rows),
        tuple(transcribe_offline(model, model.info, read_audio(r["wav"], 16000)[0]).text for r in rows),
    )


def espeak_corpus(config: Any = None, count: int = 12) -> tuple[str, str, str]:
    """(references, offline text, streaming text with `config`) of short espeak files, each joined."""
    from streaming_asr.audio import read_audio
    from streaming_asr.offline import transcribe_streaming

    model = standin_model()
    refs, offline = _espeak_offline(count)
    streamed = [
        transcribe_streaming(model, model.info, read_audio(r["wav"], 16000)[0], config).text
        for r in espeak_rows(6.0)[:count]
    ]
    return " ".join(refs), " ".join(offline), " ".join(streamed)


def sounds_like(word: str, text: str) -> bool:
    """`text` has a word within a letter or so of `word`: the stand-in's spellings flip (MAKE/MIKE)."""
    import re

    budget = max(1, len(word) // 3)
    return any(edit_distance(word, w) <= budget for w in re.findall(r"[A-Z']+", text.upper()))
