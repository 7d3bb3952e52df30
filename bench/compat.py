"""What the compatibility endpoints cost: accuracy against protocol v1, and partial delay, in one run.

One `serve` process (stand-in model; catch-up windows off so every endpoint cuts the same windows
whatever the client's pace). Measured:
1. WER/CER on tts-dev through protocol v1, Deepgram's /v1/listen, vosk's /vosk (lockstep, as its
   reference client) and OpenAI's /v1/audio/transcriptions, 4 files at a time; the file endpoint is
   offline recognition, so it is compared with the CLI's offline transcript of the same files.
2. Partial delay at 4 concurrent real-time streams (stand-in model) per live protocol: wall time from sending the
   audio a partial covers to receiving it (v1: the partial's `end`; Deepgram: interim `start +
   duration`; vosk: the reply to each 0.2 s message). Same audio and 0.2 s messages for all three.
3. v1's partial delay again while 2 uploads are transcribed (uploads yield to live windows), on the
   stand-in at 4 streams and on the base-size architecture (int8) at 2 streams, where an upload's
   30 s windows cost the most.

    python bench/compat.py [--files N] [--seconds 20] [--rounds 3] [--delay-only]

Writes bench/results/compat.json and compat.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    REPO,
    STANDIN_MODEL,
    machine_info,
    markdown_table,
    percentile,
    tts_dev_rows,  # noqa: E402
    update_readme,
    write_results,
)

sys.path.insert(0, str(REPO))
from load import save_random_base_model  # noqa: E402

from streaming_asr.audio import read_audio  # noqa: E402
from streaming_asr.textmetrics import corpus_cer, corpus_wer  # noqa: E402

CHUNK_S, STREAMS = 0.2, 4
PRECISION = ("--precision", "int8")
BASE_STREAMS = 2  # base-size int8 streams this 2-core machine holds with room to spare (4 saturate it)


def start_server(model: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streaming_asr",
            "serve",
            "--model",
            str(model),
            "--port",
            "0",
            "--device",
            "cpu",
            "--max-load",
            "0",
            "--idle-timeout",
            "300",
            "--max-sessions",
            "64",
            "--max-uploads",
            "4",
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
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
    texts, last_partial = [], ""
    step = int(16000 * CHUNK_S) * 2
    async with websockets.connect(f"ws://127.0.0.1:{port}/vosk") as ws:
        await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        t0 = time.perf_counter()
        for n, i in enumerate(range(0, len(pcm), step)):
            if pace:
                await asyncio.sleep(max(0.0, t0 + n * CHUNK_S / pace - time.perf_counter()))
            sent_at = time.perf_counter()
            await ws.send(pcm[i : i + step])
            reply = json.loads(await ws.recv())
            if reply.get("partial") and reply["partial"] != last_partial and seen:  # new text: a window completed
                seen(time.perf_counter() - sent_at)
            last_partial = reply.get("partial", "")
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
        await ws.send(pcm[i : i + step])
        sent.append(time.perf_counter())


def _delay(sent: list[float], covered_s: float) -> float:
    """Seconds since the message holding audio time `covered_s` was sent."""
    idx = min(len(sent) - 1, max(0, int(np.ceil(covered_s / CHUNK_S - 1e-6)) - 1))
    return time.perf_counter() - sent[idx]


# ------------------------------------------------------------------ measurements
async def accuracy(port: int, rows: list[dict[str, Any]], run: Callable[..., Awaitable[str]]) -> list[str]:
    sem = asyncio.Semaphore(STREAMS)

    async def one(row: dict[str, Any]) -> str:
        async with sem:
            return await run(port, pcm16(row["wav"]))

    return list(await asyncio.gather(*(one(r) for r in rows)))


def offline_texts(rows: list[dict[str, Any]]) -> list[str]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streaming_asr",
            "transcribe",
            "--model",
            str(STANDIN_MODEL),
            "--device",
            "cpu",
            "--json",
            "--no-progress",
            *[str(r["wav"]) for r in rows],
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [json.loads(line)["text"] for line in out.splitlines() if line.strip()]


async def delays(port: int, audio: list[bytes], run: Callable[..., Awaitable[str]]) -> list[float]:
    seen: list[float] = []
    await asyncio.gather(*(run(port, pcm, 1.0, seen.append) for pcm in audio))
    return seen


def score(name: str, refs: list[str], hyps: list[str], base: list[str]) -> dict[str, Any]:
    """Corpus rates (errors summed over files), and how far `hyps` are from the `base` endpoint's texts."""
    return {
        "endpoint": name,
        "files": len(hyps),
        "wer": corpus_wer(refs, hyps),
        "cer": corpus_cer(refs, hyps),
        "wer_vs_base": corpus_wer(refs, hyps) - corpus_wer(refs, base),
        "cer_between": corpus_cer(base, hyps),
        "identical_files": sum(h == x for h, x in zip(hyps, base)),
    }


def measure_accuracy(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    refs = [r["reference"] for r in rows]
    proc, port = start_server(STANDIN_MODEL, "--max-catchup-chunks", "1")
    try:
        texts = {}
        for name, run in (("v1", v1), ("deepgram", deepgram), ("vosk", vosk)):
            t0 = time.perf_counter()
            texts[name] = asyncio.run(accuracy(port, rows, run))
            print(f"{name}: {len(rows)} files in {time.perf_counter() - t0:.0f} s", flush=True)
        with ThreadPoolExecutor(STREAMS) as pool:
            texts["openai"] = list(pool.map(lambda r: openai_file(port, r["wav"]), rows))
    finally:
        proc.terminate()
        proc.wait(30)
    texts["offline"] = offline_texts(rows)
    acc = [score(n, refs, texts[n], texts["v1"]) for n in ("v1", "deepgram", "vosk")]
    return acc + [score("openai (vs CLI offline)", refs, texts["openai"], texts["offline"])]


def stream_audio(seconds: float) -> list[bytes]:
    """`seconds` of speech per stream, different files per stream."""
    long_rows = sorted(tts_dev_rows(), key=lambda r: -r["duration_s"])
    audio = []
    for k in range(STREAMS):
        pcm, j = b"", k
        while len(pcm) < seconds * 32000:
            pcm += pcm16(long_rows[j % len(long_rows)]["wav"])
            j += STREAMS
        audio.append(pcm[: int(seconds * 32000)])
    return audio


LIVE = {"v1": v1, "deepgram": deepgram, "vosk": vosk}


def measure_delays(
    model: Path, extra: tuple[str, ...], streams: int, names: tuple[str, ...], seconds: float, rounds: int, upload: Path
) -> list[dict[str, Any]]:
    """Rounds of each named variant (a live protocol, or "v1 + 2 uploads"), interleaved so drift hits all alike."""
    audio = stream_audio(seconds)[:streams]
    proc, port = start_server(model, *extra)
    seen: dict[str, list[float]] = {n: [] for n in names}
    uploads = [0]
    try:
        for r in range(rounds):
            for name in names:
                if name in LIVE:
                    seen[name].extend(asyncio.run(delays(port, audio, LIVE[name])))
                    continue
                stop = threading.Event()

                def upload_loop(stop: threading.Event = stop) -> None:
                    while not stop.is_set():
                        openai_file(port, upload)
                        uploads[0] += 1

                workers = [threading.Thread(target=upload_loop) for _ in range(2)]
                for w in workers:
                    w.start()
                time.sleep(2.0)  # the uploads are computing when the streams start
                seen[name].extend(asyncio.run(delays(port, audio, v1)))
                stop.set()
                for w in workers:
                    w.join()
            print(f"delay round {r + 1}/{rounds} done ({model.name}, {streams} streams)", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    lat = [
        {
            "model": model.name,
            "streams": streams,
            "endpoint": name,
            "partials": len(d),
            "p50_ms": 1000 * percentile(d, 50),
            "p95_ms": 1000 * percentile(d, 95),
        }
        for name, d in seen.items()
    ]
    for row in lat:
        row["p50_added_ms"] = row["p50_ms"] - lat[0]["p50_ms"]
        row["p95_added_ms"] = row["p95_ms"] - lat[0]["p95_ms"]
        if row["endpoint"] not in LIVE:
            row["uploads_done"] = uploads[0]
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=0, help="tts-dev files for accuracy (0: all)")
    ap.add_argument("--seconds", type=float, default=20.0, help="audio per delay stream")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved delay rounds")
    ap.add_argument("--delay-only", action="store_true", help="rerun the delays; keep the last run's accuracy")
    args = ap.parse_args()
    rows = tts_dev_rows()[: args.files or None]
    results: dict[str, Any] = {
        "machine": machine_info(),
        "files": len(rows),
        "chunk_s": CHUNK_S,
        "base_model": "Wav2Vec2ForCTC(Wav2Vec2Config()) random weights, " + " ".join(PRECISION),
    }
    if args.delay_only:  # keep the accuracy table of the last full run
        old = json.loads((REPO / "bench" / "results" / "compat.json").read_text())
        results["files"], results["accuracy_machine"] = old["files"], old["machine"]
        acc = results["accuracy"] = old["accuracy"]
    else:
        acc = results["accuracy"] = measure_accuracy(rows)
    upload = max(tts_dev_rows(), key=lambda r: r["duration_s"])["wav"]
    lat = measure_delays(
        STANDIN_MODEL, (), STREAMS, ("v1", "deepgram", "vosk", "v1 + 2 uploads"), args.seconds, args.rounds, upload
    )
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "wav2vec2-base-random"
        save_random_base_model(model)
        for window in ("20", "4"):  # the CLI's chunking (the default), and shorter upload windows
            rows_w = measure_delays(
                model,
                (*PRECISION, "--upload-window", window),
                BASE_STREAMS,
                ("v1", "v1 + 2 uploads"),
                args.seconds,
                args.rounds,
                upload,
            )
            rows_w[1]["endpoint"] = f"v1 + 2 uploads, --upload-window {window}"
            lat += rows_w
    results["delay"] = lat
    write_results("compat", results)
    md = (
        "Accuracy on tts-dev (stand-in model; 4 files at a time):\n\n"
        + markdown_table(
            acc,
            {
                "endpoint": "endpoint",
                "files": "files",
                "wer": "WER",
                "wer_vs_base": "WER vs v1 / offline",
                "cer_between": "CER vs v1 / offline",
                "identical_files": "identical texts",
            },
        )
        + f"\n\nPartial delay: concurrent real-time streams of {args.seconds:g} s in 0.2 s messages, "
        f"{args.rounds} interleaved rounds; the stand-in model at {STREAMS} streams, and the base-size "
        f"architecture ({' '.join(PRECISION)}) at {BASE_STREAMS}; uploads: 2 clients uploading a "
        f"{max(r['duration_s'] for r in tts_dev_rows()):.0f} s file back to back. "
        "Added: against v1 on the same server.\n\n"
        + markdown_table(
            lat,
            {
                "model": "model",
                "streams": "streams",
                "endpoint": "endpoint",
                "partials": "partials",
                "p50_ms": "p50 (ms)",
                "p95_ms": "p95 (ms)",
                "p50_added_ms": "p50 added (ms)",
                "p95_added_ms": "p95 added (ms)",
                "uploads_done": "uploads done",
            },
        )
        + "\n"
    )
    (REPO / "bench" / "results" / "compat.md").write_text(md)
    update_readme("compat", md)
    print(md)


if __name__ == "__main__":
    main()
