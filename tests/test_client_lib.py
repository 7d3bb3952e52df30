"""The asyncio client library against a real server with the stand-in model."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soundfile as sf
from helpers import TTS_DEV, cer, sounds_like

from clients import AsrClient, AuthError, Closed, ConnectError, Final, Partial, Ready, ServerFullError, StartRejected
from clients.asr_client import encode_audio

# espeak voices the stand-in model recognises fairly well (see tts-dev/manifest.tsv)
WAV = TTS_DEV / "wav" / "dev-0072.wav"  # "MAKE A FORCED LANDING", 1.5 s
WAV_2 = TTS_DEV / "wav" / "dev-0066.wav"  # "BUILD A MILLION DOLLAR BUSINESS", 1.6 s


async def stream(client: AsrClient, audio: np.ndarray, rate: int, chunk_s: float = 0.1) -> None:
    step = int(rate * chunk_s)
    for i in range(0, len(audio), step):
        await client.send_audio(audio[i : i + step])


async def collect(client: AsrClient) -> list:  # type: ignore[type-arg]
    return [event async for event in client]


async def test_file_gives_finals_with_words(standin_server) -> None:  # type: ignore[no-untyped-def]
    audio, rate = sf.read(WAV, dtype="int16")
    async with AsrClient(standin_server.ws_url, sample_rate=rate) as client:
        assert isinstance(client.ready, Ready)
        assert client.ready.protocol == 1 and client.ready.input_sample_rate == rate
        receiver = asyncio.create_task(collect(client))
        await stream(client, audio, rate)
        await client.stop()
        events = await asyncio.wait_for(receiver, 60)
    finals = [e for e in events if isinstance(e, Final)]
    assert isinstance(events[-1], Closed) and events[-1].reason == "stop"
    assert events[-1].segments == len(finals) and finals[-1].reason == "stop"
    assert [f.segment for f in finals] == list(range(len(finals)))
    text = " ".join(f.text for f in finals if f.text)
    assert sounds_like("MAKE", text) and cer("MAKE A FORCED LANDING", text) < 0.4, text
    words = [w for f in finals for w in f.words]
    assert [w.word for w in words] == text.split()
    assert all(0.0 <= w.start < w.end <= len(audio) / rate + 0.1 and 0.0 <= w.confidence <= 1.0 for w in words)
    partials = [e for e in events if isinstance(e, Partial)]
    assert all(p.stable <= len(p.text) for p in partials)


async def test_finalize_mid_stream_closes_a_segment(standin_server) -> None:  # type: ignore[no-untyped-def]
    first, rate = sf.read(WAV, dtype="int16")
    second, rate_2 = sf.read(WAV_2, dtype="int16")
    assert rate == rate_2
    async with AsrClient(standin_server.ws_url, sample_rate=rate, interim_results=False) as client:
        receiver = asyncio.create_task(collect(client))
        await stream(client, first, rate)
        await client.finalize()
        await stream(client, second, rate)
        await client.stop()
        events = await asyncio.wait_for(receiver, 60)
    assert not any(isinstance(e, Partial) for e in events)  # interim_results=False
    finals = [e for e in events if isinstance(e, Final)]
    assert finals[0].reason == "finalize" and finals[-1].reason == "stop"
    assert sounds_like("MAKE", finals[0].text)
    assert finals[0].end <= len(first) / rate + 0.05  # the cut is where finalize arrived
    later = " ".join(f.text for f in finals[1:])
    assert "MAKE" not in later.split() and cer("BUILD A MILLION DOLLAR BUSINESS", later) < 0.6, later


async def test_float_array_input_is_converted(standin_server) -> None:  # type: ignore[no-untyped-def]
    audio, rate = sf.read(WAV, dtype="float32")
    loud = np.concatenate([audio * 4.0, np.zeros(rate // 4, np.float32)])  # clamped to -1..1 on the way
    for encoding in ("pcm_f32le", "pcm_s16le"):
        async with AsrClient(standin_server.ws_url, sample_rate=rate, encoding=encoding) as client:
            receiver = asyncio.create_task(collect(client))
            await stream(client, audio.astype(np.float64), rate)
            await client.stop()
            events = await asyncio.wait_for(receiver, 60)
        text = " ".join(e.text for e in events if isinstance(e, Final))
        assert sounds_like("MAKE", text), (encoding, text)
    assert np.frombuffer(encode_audio(loud, "pcm_f32le", 1), "<f4").max() <= 1.0


def test_encode_audio_conversions() -> None:
    floats = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, np.nan])
    assert np.frombuffer(encode_audio(floats, "pcm_s16le", 1), "<i2").tolist() == [-32767, -32767, 0, 16384, 32767, 0]
    ints = np.array([[-32768, 16384]], np.int16)  # one stereo frame
    assert np.frombuffer(encode_audio(ints, "pcm_f32le", 2), "<f4").tolist() == [-1.0, 0.5]
    assert encode_audio(b"\x01\x02\x03\x04", "pcm_s16le", 2) == b"\x01\x02\x03\x04"
    with pytest.raises(ValueError):
        encode_audio(b"\x01\x02\x03", "pcm_s16le", 1)  # half a sample
    with pytest.raises(ValueError):
        encode_audio(ints, "pcm_s16le", 1)  # 2 channels given, session has 1
    with pytest.raises(TypeError):
        encode_audio(np.zeros(4, np.int32), "pcm_s16le", 1)


async def test_token_accepted_and_refused(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = await asyncio.to_thread(server_factory, token="s3cret")
    async with AsrClient(server.ws_url, sample_rate=16000, token="s3cret") as client:
        assert client.ready is not None
        await client.send_audio(np.zeros(1600, np.int16))
        await client.stop()
        assert isinstance([e async for e in client][-1], Closed)
    for wrong in ("wrong", None):
        with pytest.raises(AuthError, match="401"):
            async with AsrClient(server.ws_url, sample_rate=16000, token=wrong):
                pass


async def test_refused_start_raises(standin_server) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StartRejected) as info:
        async with AsrClient(standin_server.ws_url, sample_rate=4000):
            pass
    assert info.value.code == "unsupported_sample_rate"


async def test_server_full_and_unreachable(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = await asyncio.to_thread(server_factory, model="tiny", max_sessions=1)
    async with AsrClient(server.ws_url, sample_rate=16000):
        with pytest.raises(ServerFullError):
            async with AsrClient(server.ws_url, sample_rate=16000):
                pass
    for _ in range(50):  # the slot is freed once the server has finished the first session
        try:
            async with AsrClient(server.ws_url, sample_rate=16000) as again:
                assert again.ready is not None
                break
        except ServerFullError:
            await asyncio.sleep(0.1)
    else:
        pytest.fail("the session slot was never freed")
    with pytest.raises(ConnectError, match="cannot connect"):
        async with AsrClient("ws://127.0.0.1:9/v1/stream", sample_rate=16000, open_timeout=5):
            pass
