"""What the compatibility endpoints cost: accuracy against protocol v1, and partial delay, in one run.

One `serve` process (stand-in model; catch-up windows off so every endpoint cuts the same windows
whatever the client's pace). Measured:
1. WER/CER on tts-dev through protocol v1, Deepgram's /v1/listen, vosk's /vosk (lockstep, as its
   reference client) and OpenAI's /v1/audio/transcriptions, 4 files at a time; the file endpoint is
   offline recognition, so it is compared with the CLI's offline transcript of the same files.
2. Partial delay at 4 concurrent real-time streams per live protocol: wall time from sending the
   audio a partial covers to receiving it (v1: the partial's `end`; Deepgram: interim `start +
   duration`; vosk: the reply to each 0.2 s message). Same audio and 0.2 s messages for all three.
3. v1's partial delay at 4 streams again while 2 uploads are transcribed (uploads yield to live windows).

    python bench/compat.py [--files N] [--seconds 20]

Writes bench/results/compat.json and compat.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (REPO, STANDIN_MODEL, machine_info, markdown_table, percentile, tts_dev_rows,  # noqa: E402
                    update_readme, write_results)

sys.path.insert(0, str(REPO))
from streaming_asr.audio import read_audio  # noqa: E402
from streaming_asr.textmetrics import cer, wer  # noqa: E402

CHUNK_S, STREAMS = 0.2, 4


def start_server() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "streaming_asr", "serve", "--model", str(STANDIN_MODEL),
                             "--port", "0", "--device", "cpu", "--max-load", "0", "--max-catchup-chunks", "1",
                             "--idle-timeout", "300", "--max-sessions", "64", "--max-uploads", "4"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    return proc, int(line.split()[3].rsplit(":", 1)[1].split("/")[0])


def pcm16(path: Path) -> bytes:
    audio, _ = read_audio(path, 16000)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


# ------------------------------------------------------------------ clients: (port, pcm, pace, on_partial) -> text
async def v1(port: int, pcm: bytes, pace: float = 0, seen: Callable[[float], None] | None = None) -> str:
    sent: list[float] = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        json.loads(await ws.recv())
        reader = asyncio.ensure_future(_read_v1(ws, sent, seen))
        await _send_paced(ws, pcm, pace, sent)
        await ws.send(json.dumps({"type": "stop"}))
        return await reader


async def _read_v1(ws: Any, sent: list[float], seen: Callable[[float], None] | None) -> str:
    finals = []
    async for raw in ws:
        m = json.loads(raw)
        if m["type"] == "partial" and seen:
            seen(_delay(sent, m["end"]))
        if m["type"] == "final" and m["text"]:
            finals.append(m["text"])
    return " ".join(finals)


async def deepgram(port: int, pcm: bytes, pace: float = 0, seen: Callable[[float], None] | None = None) -> str:
    sent: list[float] = []
    url = f"ws://127.0.0.1:{port}/v1/listen?encoding=linear16&sample_rate=16000&interim_results=true"
    async with websockets.connect(url) as ws:
        reader = asyncio.ensure_future(_read_dg(ws, sent, seen))
        await _send_paced(ws, pcm, pace, sent)
        await ws.send(json.dumps({"type": "CloseStream"}))
        return await reader


async def _read_dg(ws: Any, sent: list[float], seen: Callable[[float], None] | None) -> str:
    finals = []
    async for raw in ws:
        m = json.loads(raw)
        if m["type"] == "Results" and not m["is_final"] and seen:
            seen(_delay(sent, m["start"] + m["duration"]))
        if m["type"] == "Results" and m["is_final"] and m["channel"]["alternatives"][0]["transcript"]:
            finals.append(m["channel"]["alternatives"][0]["transcript"])
    return " ".join(finals).upper()


async def vosk(port: int, pcm: bytes, pace: float = 0, seen: Callable[[float], None] | None = None) -> str:
    texts = []
    step = int(16000 * CHUNK_S) * 2
    async with websockets.connect(f"ws://127.0.0.1:{port}/vosk") as ws:
        await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        t0 = time.perf_counter()
        for n, i in enumerate(range(0, len(pcm), step)):
            if pace:
                await asyncio.sleep(max(0.0, t0 + n * CHUNK_S / pace - time.perf_counter()))
            sent_at = time.perf_counter()
            await ws.send(pcm[i:i + step])
            reply = json.loads(await ws.recv())
            if "partial" in reply and seen:
                seen(time.perf_counter() - sent_at)
            if reply.get("text"):
                texts.append(reply["text"])
        await ws.send('{"eof" : 1}')
        last = json.loads(await ws.recv())
        if last.get("text"):
            texts.append(last["text"])
    return " ".join(texts).upper()


def openai_file(port: int, path: Path) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
    with open(path, "rb") as fh:
        return client.audio.transcriptions.create(file=fh, model="whisper-1").text


async def _send_paced(ws: Any, pcm: bytes, pace: float, sent: list[float]) -> None:
    """Send 0.2 s messages (at `pace` x real time; 0: as fast as possible); sent[i] = when message i left."""
    step = int(16000 * CHUNK_S) * 2
    t0 = time.perf_counter()
    for n, i in enumerate(range(0, len(pcm), step)):
        if pace:
            await asyncio.sleep(max(0.0, t0 + n * CHUNK_S / pace - time.perf_counter()))
        await ws.send(pcm[i:i + step])
        sent.append(time.perf_counter())


def _delay(sent: list[float], covered_s: float) -> float:
    """Seconds since the message holding audio time `covered_s` was sent."""
    idx = min(len(sent) - 1, max(0, int(np.ceil(covered_s / CHUNK_S - 1e-6)) - 1))
    return time.perf_counter() - sent[idx]


# ------------------------------------------------------------------ measurements
async def accuracy(port: int, rows: list[dict[str, Any]], name: str, run: Callable[..., Awaitable[str]]) -> list[str]:
    sem = asyncio.Semaphore(STREAMS)

    async def one(row: dict[str, Any]) -> str:
        async with sem:
            return await run(port, pcm16(row["wav"]))

    return list(await asyncio.gather(*(one(r) for r in rows)))


def offline_texts(rows: list[dict[str, Any]]) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "streaming_asr", "transcribe", "--model", str(STANDIN_MODEL),
                          "--device", "cpu", "--json", "--no-progress", *[str(r["wav"]) for r in rows]],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [json.loads(line)["text"] for line in out.splitlines() if line.strip()]


async def delays(port: int, audio: list[bytes], run: Callable[..., Awaitable[str]]) -> list[float]:
    seen: list[float] = []
    await asyncio.gather(*(run(port, pcm, 1.0, seen.append) for pcm in audio))
    return seen


def score(name: str, refs: list[str], hyps: list[str], base: list[str]) -> dict[str, Any]:
    ref, hyp, b = " ".join(refs), " ".join(hyps), " ".join(base)
    return {"endpoint": name, "files": len(hyps), "wer": wer(ref, hyp), "cer": cer(ref, hyp),
            "wer_vs_base": wer(ref, hyp) - wer(ref, b), "cer_between": cer(b, hyp),
            "identical_files": sum(h == x for h, x in zip(hyps, base))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=0, help="tts-dev files for accuracy (0: all)")
    ap.add_argument("--seconds", type=float, default=20.0, help="audio per delay stream")
    args = ap.parse_args()
    rows = tts_dev_rows()[: args.files or None]
    refs = [r["reference"] for r in rows]
    proc, port = start_server()
    try:
        results: dict[str, Any] = {"machine": machine_info(), "files": len(rows), "streams": STREAMS}
        texts = {}
        for name, run in (("v1", v1), ("deepgram", deepgram), ("vosk", vosk)):
            t0 = time.perf_counter()
            texts[name] = asyncio.run(accuracy(port, rows, name, run))
            print(f"{name}: {len(rows)} files in {time.perf_counter() - t0:.0f} s", flush=True)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(STREAMS) as pool:
            texts["openai"] = list(pool.map(lambda r: openai_file(port, r["wav"]), rows))
        texts["offline"] = offline_texts(rows)
        acc = [score(n, refs, texts[n], texts["v1"]) for n in ("v1", "deepgram", "vosk")]
        acc += [score("openai (vs CLI offline)", refs, texts["openai"], texts["offline"])]
        results["accuracy"] = acc

        long_rows = sorted(tts_dev_rows(), key=lambda r: -r["duration_s"])
        audio = []
        for k in range(STREAMS):  # ~`seconds` of speech per stream, different files per stream
            pcm, j = b"", k
            while len(pcm) < args.seconds * 32000:
                pcm += pcm16(long_rows[j % len(long_rows)]["wav"])
                j += STREAMS
            audio.append(pcm[: int(args.seconds * 32000)])
        lat = []
        for name, run in (("v1", v1), ("deepgram", deepgram), ("vosk", vosk)):
            d = asyncio.run(delays(port, audio, run))
            lat.append({"endpoint": name, "partials": len(d), "p50_ms": 1000 * percentile(d, 50),
                        "p95_ms": 1000 * percentile(d, 95)})
        stop = threading.Event()
        uploads = [0]

        def upload_loop() -> None:
            while not stop.is_set():
                openai_file(port, long_rows[0]["wav"])
                uploads[0] += 1

        workers = [threading.Thread(target=upload_loop) for _ in range(2)]
        for w in workers:
            w.start()
        d = asyncio.run(delays(port, audio, v1))
        stop.set()
        for w in workers:
            w.join()
        lat.append({"endpoint": "v1 + 2 uploads", "partials": len(d), "p50_ms": 1000 * percentile(d, 50),
                    "p95_ms": 1000 * percentile(d, 95), "uploads_done": uploads[0]})
        base = lat[0]
        for row in lat:
            row["p50_added_ms"] = row["p50_ms"] - base["p50_ms"]
            row["p95_added_ms"] = row["p95_ms"] - base["p95_ms"]
        results["delay"] = lat
    finally:
        proc.terminate()
        proc.wait(30)
    write_results("compat", results)
    md = ("Accuracy on tts-dev (stand-in model; 4 files at a time):\n\n" + markdown_table(acc, {
        "endpoint": "endpoint", "files": "files", "wer": "WER", "wer_vs_base": "WER vs v1 / offline",
        "cer_between": "CER vs v1 / offline", "identical_files": "identical texts"})
        + f"\n\nPartial delay, {STREAMS} concurrent real-time streams of {args.seconds:g} s, 0.2 s messages:\n\n"
        + markdown_table(lat, {"endpoint": "endpoint", "partials": "partials", "p50_ms": "p50 (ms)",
                               "p95_ms": "p95 (ms)", "p50_added_ms": "p50 added (ms)",
                               "p95_added_ms": "p95 added (ms)", "uploads_done": "uploads done"}) + "\n")
    (REPO / "bench" / "results" / "compat.md").write_text(md)
    update_readme("compat", md)
    print(md)


if __name__ == "__main__":
    main()
