"""The microphone client: capture path, reconnects, output files and device handling.

Only the sound card is faked, at the sounddevice boundary (a stand-in ``sd`` module whose
``InputStream`` plays a file from a thread into the callback, as PortAudio would). Everything
after that (callback, queue, sessions, reconnects, writers) is the real code against a real server.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import soundfile as sf
from helpers import TTS_DEV, sounds_like
from test_output import parse_vtt

from clients import capture, mic
from clients.asr_client import Final
from clients.capture import FileSource
from clients.live import LiveStreamer

REPO = Path(__file__).resolve().parents[1]
MAKE = TTS_DEV / "wav" / "dev-0072.wav"  # espeak "MAKE A FORCED LANDING", 1.5 s
BUILD = TTS_DEV / "wav" / "dev-0066.wav"  # espeak "BUILD A MILLION DOLLAR BUSINESS", 1.6 s


def words_of(finals: list[Final]) -> list[str]:
    return " ".join(f.text for f in finals).split()


@pytest.fixture(scope="module")
def three_utterances(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """MAKE... / pause / BUILD... / pause / MAKE...; returns the path and where the last one starts."""
    make, rate = sf.read(MAKE, dtype="int16")
    build, _ = sf.read(BUILD, dtype="int16")
    pause = np.zeros(int(1.3 * rate), np.int16)
    path = tmp_path_factory.mktemp("audio") / "three.wav"
    sf.write(path, np.concatenate([make, pause, build, pause, make]), rate)
    return path, (len(make) + len(build) + 2 * len(pause)) / rate


# --------------------------------------------------------------------------- fake sound card


class FakeInputStream:
    """Plays a file into the callback from its own thread like a PortAudio input stream, then
    silence; presses Ctrl-C (SIGINT to this process) once the file has been heard."""

    audio: ClassVar[np.ndarray] = np.zeros((0, 1), np.int16)
    speed: ClassVar[float] = 4.0
    opened: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, *, device: int, samplerate: int, channels: int, dtype: str, blocksize: int, callback) -> None:  # type: ignore[no-untyped-def]
        self.opened.append({"device": device, "samplerate": samplerate, "channels": channels, "dtype": dtype})
        self.blocksize, self.callback, self.rate = blocksize, callback, samplerate
        self.stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._play, daemon=True).start()

    def _play(self) -> None:
        silence = np.zeros((int(self.rate * 1.5), self.audio.shape[1]), np.int16)
        audio, started, pos = np.concatenate([self.audio, silence]), time.monotonic(), 0
        while not self.stopped.is_set():
            block = audio[pos : pos + self.blocksize]
            if len(block) < self.blocksize:
                os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C
                return
            pos += len(block)
            self.stopped.wait(max(0.0, started + pos / self.rate / self.speed - time.monotonic()))
            self.callback(block, len(block), None, SimpleNamespace(input_overflow=False, __bool__=lambda: False))

    def stop(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        self.stopped.set()


def fake_sounddevice(devices: list[dict[str, Any]], default_input: int) -> SimpleNamespace:
    return SimpleNamespace(
        query_devices=lambda: devices,
        default=SimpleNamespace(device=[default_input, 0]),
        InputStream=FakeInputStream,
    )


DEVICES = [
    {"name": "HDMI Output", "max_input_channels": 0, "max_output_channels": 8, "default_samplerate": 48000.0},
    {"name": "Built-in Microphone", "max_input_channels": 1, "max_output_channels": 0, "default_samplerate": 44100.0},
    {"name": "USB Fake Array", "max_input_channels": 4, "max_output_channels": 0, "default_samplerate": 48000.0},
]


def test_sound_card_path_with_ctrl_c_and_vtt_output(standin_server, monkeypatch, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    audio, rate = sf.read(MAKE, dtype="float32")
    at_48k = np.interp(np.arange(0, len(audio), rate / 48000), np.arange(len(audio)), audio)
    stereo = (np.stack([at_48k, at_48k * 0.5], axis=1) * 32767).astype(np.int16)
    monkeypatch.setattr(FakeInputStream, "audio", stereo)
    monkeypatch.setattr(FakeInputStream, "opened", [])
    monkeypatch.setattr(capture, "sd", fake_sounddevice(DEVICES, default_input=1))
    out = tmp_path / "captions.vtt"

    code = mic.main([standin_server.ws_url, "--device", "usb fake", "--channels", "2", "--output", str(out)])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    # opened at the device's native rate with the channels asked for; the server resamples/downmixes
    assert FakeInputStream.opened == [{"device": 2, "samplerate": 48000, "channels": 2, "dtype": "int16"}]
    assert "stopping" in captured.err
    lines = captured.out.splitlines()
    assert lines and all(line.startswith("[00:0") for line in lines)
    assert sounds_like("MAKE", captured.out)
    cues = parse_vtt(out.read_text())
    assert cues and sounds_like("MAKE", cues[0][2]) and cues[0][0] < 1.0


def test_list_devices_shows_inputs_only(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(capture, "sd", fake_sounddevice(DEVICES, default_input=2))
    assert mic.main(["--list-devices"]) == 0
    out = capsys.readouterr().out
    assert "HDMI" not in out
    lines = [line for line in out.splitlines() if "Hz" in line and "Microphone" in line or "Array" in line]
    assert any(
        line.startswith(" ") and " 1  Built-in Microphone" in line and "44100 Hz, 1 ch" in line for line in lines
    )
    assert any(line.startswith("*") and "USB Fake Array" in line and "48000 Hz, 4 ch" in line for line in lines)


def test_no_input_device_is_one_clear_line(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(capture, "sd", fake_sounddevice(DEVICES[:1], default_input=-1))
    assert mic.main(["ws://127.0.0.1:9/v1/stream"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: no audio input device found"]
    monkeypatch.setattr(capture, "sd", fake_sounddevice(DEVICES, default_input=1))
    assert mic.main(["ws://127.0.0.1:9/v1/stream", "--device", "nonexistent"]) == 1
    assert "no input device matches 'nonexistent'" in capsys.readouterr().err


def test_missing_portaudio_fails_only_when_capturing(tmp_path: Path) -> None:
    # a sounddevice that fails to import the way it does without libportaudio
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    ok = subprocess.run(
        [sys.executable, "-c", "import clients.mic, clients.commands"], env=env, capture_output=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    listing = subprocess.run(
        [sys.executable, "-m", "clients.mic", "--list-devices"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listing.returncode == 1
    assert len(listing.stderr.strip().splitlines()) == 1 and "PortAudio" in listing.stderr


def test_simulated_file_cli_writes_jsonl(standin_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "transcript.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "clients.mic", standin_server.ws_url, "--simulate-file", str(MAKE), "--speed", "4",
         "--output", str(out), "--no-partials"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sounds_like("MAKE", result.stdout)
    import json

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[-1]["reason"] == "stop" and sounds_like("MAKE", " ".join(r["text"] for r in rows))


# --------------------------------------------------------------------------- reconnects


class DroppingProxy:
    """A TCP relay on 127.0.0.1 that can cut every open connection (a network drop)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.writers: list[asyncio.StreamWriter] = []
        self.connections = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def drop_all(self) -> None:
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.drop_all()
        self.server.close()


async def test_reconnect_continues_segments_and_times(standin_server, three_utterances) -> None:  # type: ignore[no-untyped-def]
    path, last_start = three_utterances
    proxy = DroppingProxy(standin_server.port)
    port = await proxy.start()
    finals: list[Final] = []
    messages: list[str] = []

    def on_final(final: Final) -> None:
        finals.append(final)
        if len(finals) == 1:
            proxy.drop_all()  # the network fails right after the first sentence

    streamer = LiveStreamer(
        FileSource(path, speed=2.0),
        f"ws://127.0.0.1:{port}/v1/stream",
        on_final=on_final,
        on_message=messages.append,
        backoff=(0.1, 0.4),
    )
    try:
        code = await asyncio.wait_for(streamer.run(), 120)
    finally:
        await proxy.close()
    assert code == 0, messages
    assert streamer.sessions == 2 and proxy.connections == 2
    assert any("reconnecting in 0.1 s" in m for m in messages), messages
    assert sounds_like("MAKE", finals[0].text)
    # one continuous transcript: numbers go on, times are on the capture timeline
    assert [f.segment for f in finals] == list(range(len(finals)))
    assert all(a.start <= b.start for a, b in itertools.pairwise(finals))
    last_make = [f for f in finals[1:] if sounds_like("MAKE", f.text)]
    assert last_make, words_of(finals)
    assert abs(last_make[-1].start - last_start) < 0.5, (last_make[-1], last_start)
    assert finals[-1].reason == "stop"


async def test_request_stop_sends_stop_and_keeps_the_last_final(standin_server, three_utterances) -> None:  # type: ignore[no-untyped-def]
    path, _ = three_utterances
    finals: list[Final] = []
    streamer = LiveStreamer(FileSource(path, speed=1.0), standin_server.ws_url, on_final=finals.append)

    def on_partial(partial) -> None:  # type: ignore[no-untyped-def]
        if sounds_like("MAKE", partial.text):
            streamer.request_stop()  # Ctrl-C while the first sentence is being spoken

    streamer.on_partial = on_partial
    code = await asyncio.wait_for(streamer.run(), 60)
    assert code == 0
    assert finals and finals[-1].reason == "stop" and sounds_like("MAKE", finals[-1].text)
    assert finals[-1].end < 3.0  # capture stopped: the later sentences were never sent
