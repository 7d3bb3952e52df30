"""Voice-command bench: command accuracy and false triggers, without and with phrase biasing.

    python bench/commands.py            # 156 utterances, 9 TTS voices, both variants (~40-70 s on 2 cores)
    python bench/commands.py --quick    # 20 utterances

Evaluation set (synthesised here, cached in /tmp/streaming-asr-commands/):

* 12 commands typical of a home-assistant integration, with confusable pairs (on/off, open/close,
  up/down), each spoken inside carrier words ("okay so please turn on the kitchen lights thanks",
  "uh volume down") by every voice;
* 16 distractor sentences that hold no command but near-miss words ("i left the kitchen lights
  on yesterday", "call me later", "turn the page please"), each by three voices;
* voices: espeak-ng (en-us, en-gb, en-us+f3, en-us+m3, en-gb-x-rp at 150-190 wpm) and flite
  (slt, kal, rms, awb), resampled to 16 kHz with soxr and trimmed of leading/trailing silence.

Utterances of one voice are joined into sessions of up to 5, with 1.2 s of silence between them,
so that the server's silence endpointing (0.8 s) has to split them into segments as it would for a
person issuing commands one after the other; a command cut in two by an endpoint is a miss.
Each session is streamed through a real server (stand-in model, in this process) with `AsrClient`
in 100 ms frames as fast as the server reads them, twice: variant A without `phrases`, variant B
with the 12 command phrases in `start` (server default `phrase_boost`). The in-process server runs
one chunk per window (`max_catchup_chunks=1`), the geometry a live client gets; at full speed it
would otherwise run timing-dependent catch-up windows and the words would vary run to run. A `CommandMatcher` with the
`clients.commands` defaults (threshold 0.8, cooldown 2 s, no wake word) is fed the partials (stable
part) and finals, with the finals' server phrase matches, exactly as `clients/commands.py` does;
only the clock differs: `now` is the audio clock (end of the last final) instead of the wall clock,
because the bench streams faster than real time and the 2 s cooldown is meant in speech time.

Segments are attributed to the utterance their words overlap most; a command utterance is
*correct* when exactly its command fired, *wrong* when any other command fired (on<->off...), a
*miss* when nothing fired (so correct + wrong + miss = 1); a distractor utterance is a *false
trigger* when anything fired. Command-span CER: the final text is aligned to the whole spoken
sentence by character edit distance and the part aligned to the command is scored against it;
the whole final text of command utterances and of distractors is scored too, the latter to show
what biasing does to speech that is not a command.

Writes bench/results/commands.json and commands.md, updates the README section, prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import RESULTS, machine_info, markdown_table, update_readme, write_results  # noqa: E402

from clients.asr_client import AsrClient, Final, Partial, run_session_tasks  # noqa: E402
from clients.command_matcher import Command, CommandHit, normalize  # noqa: E402
from clients.commands import CommandConfig  # noqa: E402
from streaming_asr.textmetrics import edit_distance  # noqa: E402

CACHE = Path("/tmp/streaming-asr-commands")
RATE = 16000
GAP_S = 1.2  # silence between utterances of a session
EDGE_S = 0.3  # silence before the first and after the last utterance
FRAME_S = 0.1  # client frame size
SESSION_SIZE = 5  # utterances per session
CONCURRENCY = 4  # sessions streamed at once (the server batches their windows)

COMMANDS = [
    "turn on the kitchen lights",
    "turn off the kitchen lights",
    "play some music",
    "stop the music",
    "set a timer for ten minutes",
    "what is the weather",
    "open the garage door",
    "close the garage door",
    "call mom",
    "volume up",
    "volume down",
    "next song",
]

# "{}" is the command; plain words only (commas make TTS pause, which would test endpointing of
# the pause rather than the command)
CARRIERS = [
    "{}",
    "okay so please {} thanks",
    "uh {}",
    "hey can you {} now",
    "please {}",
    "{} right now please",
    "um could you {}",
    "alright {} okay",
]

DISTRACTORS = [
    "the kitchen is full of light today",
    "music theory is hard",
    "turn the page please",
    "i left the kitchen lights on yesterday",
    "call me later tonight",
    "the volume of this box is small",
    "what a lovely song that was",
    "stop at the next corner",
    "we should paint the garage door",
    "the weather was nice last week",
    "set the table for ten people",
    "my mom plays the piano",
    "the timer on the oven is broken",
    "open a window in the kitchen",
    "turn up the heat in the oven",
    "the music stopped suddenly",
]


@dataclass(frozen=True)
class Voice:
    family: str  # "espeak" or "flite"
    name: str
    speed: int | None = None  # espeak words per minute

    @property
    def label(self) -> str:
        return f"{self.family}:{self.name}" + (f"@{self.speed}" if self.speed else "")

    def argv(self, text: str, wav: Path) -> list[str]:
        if self.family == "espeak":
            return ["espeak-ng", "-v", self.name, "-s", str(self.speed or 170), "-w", str(wav), text]
        return ["flite", "-voice", self.name, "-t", text, "-o", str(wav)]


ESPEAK_VOICES = [
    Voice("espeak", "en-us", 160),
    Voice("espeak", "en-gb", 175),
    Voice("espeak", "en-us+f3", 150),
    Voice("espeak", "en-us+m3", 190),
    Voice("espeak", "en-gb-x-rp", 170),
]
FLITE_VOICES = [Voice("flite", v) for v in ("slt", "kal", "rms", "awb")]


@dataclass
class Utterance:
    uid: str
    voice: Voice
    text: str  # what is spoken (lower case)
    command: str | None  # the command it holds, None for a distractor
    span: tuple[int, int] = (0, 0)  # character span of the command in normalize(text)
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)


@dataclass
class Session:
    utterances: list[Utterance]
    audio: np.ndarray
    spans: list[tuple[float, float]]  # seconds of each utterance's speech in the session


# --------------------------------------------------------------------------- synthesis


def available_voices() -> tuple[list[Voice], dict[str, str]]:
    """The voices whose synthesiser is installed, and the synthesisers' versions (for the report)."""
    voices: list[Voice] = []
    tools: dict[str, str] = {}
    if shutil.which("espeak-ng"):
        tools["espeak-ng"] = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
        voices += ESPEAK_VOICES
    if shutil.which("flite"):
        tools["flite"] = subprocess.run(["flite", "--version"], capture_output=True, text=True).stdout.strip()
        listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout.split()
        voices += [v for v in FLITE_VOICES if v.name in listed]
    if not voices:
        raise SystemExit("neither espeak-ng nor flite is installed (apt-get install -y espeak-ng flite)")
    return voices, tools


def synthesise(voice: Voice, text: str) -> np.ndarray:
    """16 kHz float32 speech of `text`, trimmed to 50 ms around the speech; cached on disk."""
    key = hashlib.sha1(f"{voice.label}|{text}".encode()).hexdigest()[:16]
    path = CACHE / f"{key}.wav"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.wav"
            subprocess.run(voice.argv(text, raw), check=True, capture_output=True)
            audio, rate = sf.read(raw, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        if rate != RATE:
            audio = soxr.resample(audio, rate, RATE, quality="HQ").astype(np.float32)
        loud = np.flatnonzero(np.abs(audio) > 0.02 * max(1e-6, float(np.abs(audio).max())))
        margin = int(0.05 * RATE)
        audio = audio[max(0, loud[0] - margin) : loud[-1] + margin] if loud.size else audio
        sf.write(path, audio, RATE, subtype="PCM_16")
    return sf.read(path, dtype="float32")[0]


def command_utterance(uid: str, voice: Voice, command: str, carrier: str) -> Utterance:
    text = carrier.format(command)
    before = normalize(carrier.split("{}")[0])
    start = len(before) + (1 if before else 0)
    return Utterance(uid, voice, text, command, (start, start + len(normalize(command))))


def build_utterances(voices: Sequence[Voice], quick: bool) -> list[Utterance]:
    """Every voice says every command (carriers rotate); each distractor is said by three voices.

    Quick: each command once and 8 distractors once, voices rotating.
    """
    out: list[Utterance] = []
    for ci, command in enumerate(COMMANDS):
        for vi, voice in enumerate(voices):
            if quick and vi != ci % len(voices):
                continue
            out.append(command_utterance(f"c{ci:02d}v{vi}", voice, command, CARRIERS[(ci + vi) % len(CARRIERS)]))
    for di, text in enumerate(DISTRACTORS[:8] if quick else DISTRACTORS):
        for k in range(1 if quick else 3):
            vi = (di * 3 + k + (di if quick else 0)) % len(voices)
            out.append(Utterance(f"d{di:02d}v{vi}", voices[vi], text, None))
    return out


def build_sessions(utterances: Sequence[Utterance], seed: int = 7) -> list[Session]:
    """Per voice, shuffle its utterances and join them, up to SESSION_SIZE at a time, with GAP_S silence."""
    rng = random.Random(seed)
    by_voice: dict[str, list[Utterance]] = {}
    for u in utterances:
        by_voice.setdefault(u.voice.label, []).append(u)
    sessions = []
    for group in by_voice.values():
        rng.shuffle(group)
        for i in range(0, len(group), SESSION_SIZE):
            part = group[i : i + SESSION_SIZE]
            pieces, spans, t = [np.zeros(int(EDGE_S * RATE), np.float32)], [], EDGE_S
            for j, u in enumerate(part):
                if j:
                    pieces.append(np.zeros(int(GAP_S * RATE), np.float32))
                    t += GAP_S
                pieces.append(u.audio)
                spans.append((t, t + len(u.audio) / RATE))
                t += len(u.audio) / RATE
            pieces.append(np.zeros(int(EDGE_S * RATE), np.float32))
            sessions.append(Session(part, np.concatenate(pieces), spans))
    return sessions


# --------------------------------------------------------------------------- streaming


@dataclass
class SegmentResult:
    segment: int
    text: str
    start: float
    end: float
    has_words: bool
    hits: list[CommandHit]
    phrases: list[tuple[str, float]]  # the server's phrase matches (variant B)


async def stream_session(url: str, session: Session, phrases: Sequence[str] | None) -> list[SegmentResult]:
    """Stream one session at full speed; feed a fresh matcher exactly like clients/commands.py."""
    matcher = CommandConfig(tuple(Command(c) for c in COMMANDS)).matcher()  # the client's defaults
    pending: dict[int, list[CommandHit]] = {}
    segments: list[SegmentResult] = []
    clock = 0.0  # audio time: end of the last final

    async with AsrClient(url, sample_rate=RATE, phrases=phrases) as client:
        pcm = np.round(np.clip(session.audio, -1, 1) * 32767).astype(np.int16)
        step = int(FRAME_S * RATE)

        async def send() -> None:
            for i in range(0, len(pcm), step):
                await client.send_audio(pcm[i : i + step])
            await client.stop()

        async def receive() -> None:
            nonlocal clock
            async for event in client:
                if isinstance(event, Partial):
                    hits = matcher.feed_partial(event.segment, event.text, event.stable, clock)
                    pending.setdefault(event.segment, []).extend(hits)
                elif isinstance(event, Final):
                    clock = max(clock, event.end)
                    found = [(p.phrase, p.score) for p in event.phrases]
                    hits = pending.pop(event.segment, []) + matcher.feed_final(event.segment, event.text, clock, found)
                    segments.append(
                        SegmentResult(event.segment, event.text, event.start, event.end, bool(event.words), hits, found)
                    )

        await run_session_tasks(send(), receive())
    if pending:
        raise RuntimeError(f"partials of segments {sorted(pending)} never got a final")
    return segments


@dataclass
class UtteranceResult:
    fired: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    segments: int = 0  # segments with words given to this utterance
    server_phrases: list[tuple[str, float]] = field(default_factory=list)


def attribute(session: Session, segments: Sequence[SegmentResult]) -> tuple[list[UtteranceResult], int]:
    """Give each segment to the utterance its words overlap most; also count segments spanning two."""
    results = [UtteranceResult() for _ in session.utterances]
    merged = 0
    for seg in segments:
        if not seg.has_words and not seg.hits:
            continue
        overlaps = [max(0.0, min(seg.end, b) - max(seg.start, a)) for a, b in session.spans]
        if sum(o > 0.05 for o in overlaps) > 1:
            merged += 1
        if max(overlaps) > 0:
            k = int(np.argmax(overlaps))
        else:  # no overlap (a word in the silence): the nearest utterance
            mid = (seg.start + seg.end) / 2
            k = int(np.argmin([min(abs(mid - a), abs(mid - b)) for a, b in session.spans]))
        if seg.text:
            results[k].texts.append(seg.text)
        results[k].segments += seg.has_words
        results[k].server_phrases += [(p, round(sc, 3)) for p, sc in seg.phrases]
        for hit in seg.hits:
            if hit.command.phrase not in results[k].fired:
                results[k].fired.append(hit.command.phrase)
                results[k].sources.append(hit.source)
    return results, merged


async def run_variant(url: str, sessions: Sequence[Session], phrases: Sequence[str] | None) -> dict[str, Any]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(s: Session) -> list[SegmentResult]:
        async with gate:
            return await stream_session(url, s, phrases)

    started = time.perf_counter()
    all_segments = await asyncio.gather(*(one(s) for s in sessions))
    wall = time.perf_counter() - started
    per_utt: dict[str, UtteranceResult] = {}
    merged = 0
    for session, segments in zip(sessions, all_segments):
        results, m = attribute(session, segments)
        merged += m
        per_utt.update({u.uid: r for u, r in zip(session.utterances, results)})
    return {"wall_s": wall, "merged_segments": merged, "utterances": per_utt}


# --------------------------------------------------------------------------- scoring


def aligned_span(ref: str, hyp: str, span: tuple[int, int]) -> str:
    """The part of `hyp` that a minimum edit-distance alignment maps onto `ref[span[0]:span[1]]`."""
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), dtype=np.int32)
    d[:, 0] = np.arange(n + 1)
    d[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))
    # walk back; remember which hyp positions each ref boundary i maps to
    at: dict[int, list[int]] = {}
    i, j = n, m
    at.setdefault(i, []).append(j)
    while i or j:
        if i and j and d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            i, j = i - 1, j - 1
        elif i and d[i, j] == d[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
        at.setdefault(i, []).append(j)
    start, end = max(at[span[0]]), min(at[span[1]])  # inserted letters at the edges stay outside
    return hyp[start : max(start, end)].strip()


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def score(utterances: Sequence[Utterance], results: dict[str, UtteranceResult]) -> dict[str, Any]:
    """Command accuracy, wrong commands, misses, false triggers and CERs over `utterances`."""
    cmd = [u for u in utterances if u.command]
    dis = [u for u in utterances if not u.command]
    correct = sum(results[u.uid].fired == [u.command] for u in cmd)
    wrong = sum(any(f != u.command for f in results[u.uid].fired) for u in cmd)
    missed = sum(not results[u.uid].fired for u in cmd)
    false = sum(bool(results[u.uid].fired) for u in dis)
    span_err = span_len = 0
    sentence = {True: [0, 0], False: [0, 0]}  # command utterance? -> [errors, reference chars]
    for u in utterances:
        ref, hyp = normalize(u.text), normalize(" ".join(results[u.uid].texts))
        sentence[bool(u.command)][0] += edit_distance(ref, hyp)
        sentence[bool(u.command)][1] += len(ref)
        if u.command:
            target = ref[u.span[0] : u.span[1]]
            span_err += edit_distance(target, aligned_span(ref, hyp, u.span))
            span_len += len(target)
    sources = Counter(s for u in utterances for s in results[u.uid].sources)
    return {
        "commands": len(cmd),
        "distractors": len(dis),
        "correct": correct,
        "wrong": wrong,
        "missed": missed,
        "false_triggers": false,
        "accuracy": rate(correct, len(cmd)),
        "wrong_rate": rate(wrong, len(cmd)),
        "miss_rate": rate(missed, len(cmd)),
        "false_trigger_rate": rate(false, len(dis)),
        "command_cer": rate(span_err, span_len),
        "command_utterance_cer": rate(*sentence[True]),
        "distractor_cer": rate(*sentence[False]),
        "split_commands": sum(results[u.uid].segments > 1 for u in cmd),
        "hits_by_source": dict(sources),
    }


# --------------------------------------------------------------------------- report

METRICS = [
    ("accuracy", "command accuracy ↑", "correct", "commands"),
    ("wrong_rate", "wrong command ↓", "wrong", "commands"),
    ("miss_rate", "missed ↓", "missed", "commands"),
    ("false_trigger_rate", "false trigger (distractors) ↓", "false_triggers", "distractors"),
    ("command_cer", "CER, command span ↓", None, None),
    ("command_utterance_cer", "CER, whole command utterance ↓", None, None),
    ("distractor_cer", "CER, distractor utterance ↓", None, None),
]


def cell(m: dict[str, Any], key: str, num: str | None, den: str | None) -> str:
    value = m[key]
    if value is None:
        return "—"
    return f"{value:.3f}" + (f" ({m[num]}/{m[den]})" if num and den else "")


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "—"
    if a == 0:
        return "1.00" if b == 0 else "∞"
    return f"{b / a:.2f}"


def table(metrics: dict[str, dict[str, dict[str, Any]]], groups: Sequence[str]) -> str:
    """metrics[group][variant] -> scores. One row per metric; A, B and B/A per group."""
    columns = [("metric", "metric")]
    for g in groups:
        columns += [(f"{g}A", f"{g} A: no phrases"), (f"{g}B", f"{g} B: phrases"), (f"{g}R", f"{g} B/A")]
    rows = []
    for key, label, num, den in METRICS:
        row: dict[str, Any] = {"metric": label}
        for g in groups:
            a, b = metrics[g]["A"], metrics[g]["B"]
            row[f"{g}A"], row[f"{g}B"] = cell(a, key, num, den), cell(b, key, num, den)
            row[f"{g}R"] = ratio(a[key], b[key])
        rows.append(row)
    return markdown_table(rows, dict(columns))


def voice_table(per_voice: dict[str, dict[str, dict[str, Any]]]) -> str:
    rows = []
    for label, v in per_voice.items():
        a, b = v["A"], v["B"]
        rows.append(
            {
                "voice": label,
                "A": f"{a['correct']}/{a['commands']}",
                "B": f"{b['correct']}/{b['commands']}",
                "wA": a["wrong"],
                "wB": b["wrong"],
                "fA": f"{a['false_triggers']}/{a['distractors']}",
                "fB": f"{b['false_triggers']}/{b['distractors']}",
                "cA": f"{a['command_cer']:.2f}" if a["command_cer"] is not None else "—",
                "cB": f"{b['command_cer']:.2f}" if b["command_cer"] is not None else "—",
            }
        )
    return markdown_table(
        rows,
        dict(
            [
                ("voice", "voice"),
                ("A", "correct A"),
                ("B", "correct B"),
                ("wA", "wrong A"),
                ("wB", "wrong B"),
                ("fA", "false trig. A"),
                ("fB", "false trig. B"),
                ("cA", "cmd CER A"),
                ("cB", "cmd CER B"),
            ]
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 utterances instead of 156")
    parser.add_argument(
        "--url",
        default=None,
        help="use a running server instead of starting one in-process (its catch-up windows "
        "make results vary slightly run to run)",
    )
    args = parser.parse_args(argv)

    begun = time.perf_counter()
    voices, tools = available_voices()
    utterances = build_utterances(voices, args.quick)
    for u in utterances:
        u.audio = synthesise(u.voice, u.text)
    sessions = build_sessions(utterances)
    audio_s = sum(len(s.audio) for s in sessions) / RATE
    synth_s = time.perf_counter() - begun
    print(
        f"{len(utterances)} utterances, {len(sessions)} sessions, {audio_s:.0f} s of audio "
        f"(synthesis/cache {synth_s:.1f} s)",
        file=sys.stderr,
    )

    handle = None
    url = args.url
    if url is None:
        from streaming_asr.config import StreamConfig
        from tests.helpers import start_server_thread

        # one chunk per window, as a live (real-time) client gets: at full speed the server would
        # otherwise run catch-up windows whose size depends on timing, and results would vary run to run
        handle = start_server_thread("standin", engine=StreamConfig(max_catchup_chunks=1))
        url = handle.ws_url
    try:
        runs = {}
        for variant, phrases in (("A", None), ("B", COMMANDS)):
            runs[variant] = asyncio.run(run_variant(url, sessions, phrases))
            print(f"variant {variant}: {runs[variant]['wall_s']:.1f} s", file=sys.stderr)
    finally:
        if handle is not None:
            handle.stop()

    groups = {
        "all": utterances,
        "espeak": [u for u in utterances if u.voice.family == "espeak"],
        "flite": [u for u in utterances if u.voice.family == "flite"],
    }
    groups = {g: us for g, us in groups.items() if us}
    metrics = {g: {v: score(us, runs[v]["utterances"]) for v in runs} for g, us in groups.items()}
    per_voice = {
        voice.label: {v: score([u for u in utterances if u.voice == voice], runs[v]["utterances"]) for v in runs}
        for voice in voices
        if any(u.voice == voice for u in utterances)
    }

    n_cmd = sum(1 for u in utterances if u.command)
    md = "\n".join(
        [
            f"{n_cmd} command utterances ({len(COMMANDS)} commands in carrier words) and "
            f"{len(utterances) - n_cmd} near-miss distractors, {len(voices)} TTS voices "
            f"({', '.join(v.label for v in voices)}), {len(sessions)} sessions with {GAP_S:g} s pauses "
            f"({audio_s:.0f} s of audio), stand-in model, `CommandMatcher` with the `clients.commands` defaults "
            f"(threshold 0.8). A: no `phrases`; B: the {len(COMMANDS)} commands as `phrases` (default boost). "
            f"Correct = exactly the right command fired; wrong = another command fired too or instead.",
            "",
            table(metrics, list(groups)),
            "",
            "Per voice:",
            "",
            voice_table(per_voice),
            "",
            f"Segments spanning two utterances: A {runs['A']['merged_segments']}, B {runs['B']['merged_segments']}; "
            f"command utterances split over several segments: A {metrics['all']['A']['split_commands']}, "
            f"B {metrics['all']['B']['split_commands']}. "
            f"Hits by source (A / B): {metrics['all']['A']['hits_by_source']} / "
            f"{metrics['all']['B']['hits_by_source']}. "
            f"Full run {time.perf_counter() - begun:.0f} s{' (--quick)' if args.quick else ''}; "
            f"regenerate with `python bench/commands.py`.",
        ]
    )
    print(md)

    data = {
        "quick": args.quick,
        "machine": machine_info(),
        "tools": tools,
        "voices": [v.label for v in voices],
        "commands": COMMANDS,
        "carriers": CARRIERS,
        "distractors": DISTRACTORS[:8] if args.quick else DISTRACTORS,
        "settings": {
            "gap_s": GAP_S,
            "session_size": SESSION_SIZE,
            "frame_s": FRAME_S,
            "concurrency": CONCURRENCY,
            "clock": "audio (end of last final)",
        },
        "audio_s": round(audio_s, 1),
        "sessions": len(sessions),
        "wall_s": {v: round(r["wall_s"], 1) for v, r in runs.items()},
        "merged_segments": {v: r["merged_segments"] for v, r in runs.items()},
        "metrics": metrics,
        "per_voice": per_voice,
        "utterances": [
            {
                "id": u.uid,
                "voice": u.voice.label,
                "text": u.text,
                "command": u.command,
                **{f"fired_{v}": r["utterances"][u.uid].fired for v, r in runs.items()},
                **{f"sources_{v}": r["utterances"][u.uid].sources for v, r in runs.items()},
                **{f"heard_{v}": " / ".join(r["utterances"][u.uid].texts) for v, r in runs.items()},
                "server_phrases_B": runs["B"]["utterances"][u.uid].server_phrases,
            }
            for u in utterances
        ],
    }
    write_results("commands", data)
    (RESULTS / "commands.md").write_text(md + "\n")
    if not args.quick and not update_readme("commands", md):
        print("README has no bench:commands markers; wrote only the md file", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
