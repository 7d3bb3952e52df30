"""n-gram LM bench: tts-dev WER without and with the LM, commands with LM + phrases, the cost of LM finals.

    python bench/lm.py            # ~10 min on 2 cores (LM build cached in /tmp/streaming-asr-lm/)
    python bench/lm.py --quick    # 60 tts-dev files, 20 command utterances, 12 latency sessions

Needs the `lm` extra and Debian packages: irstlm bible-kjv python3-doc (the LM text), fortunes
wordnet-base dict-gcide (the overlap checks), wamerican-large (the word list), espeak-ng flite (commands).

One run, four parts, all with the stand-in model:

1. **Text.** The LM is built by ``streaming-asr lm build`` (IRSTLM, 3-gram) from Debian's King James Bible
   and the Python documentation's prose (``bench/lm_corpus.py``). tts-dev's sentences came from Debian's
   fortunes and WordNet glosses, so: every sentence of this text that holds a tts-dev reference or any
   sentence of the whole fortunes + WordNet pool (3+ words, as a run of whole words) is dropped, and the
   bench checks that none is left; ``dict-gcide`` is measured and left out (WordNet glosses occur in it
   verbatim). A second variant adds the ``wamerican-large`` word list (one word a line: vocabulary, no
   context) to the same text.
2. **tts-dev WER** (all 300 files, offline windowing exactly as ``transcribe``): greedy, LM, LM + word
   list, at the shipped defaults (``--lm-weight 0.5 --word-score 1.0 --beam-width 64``); the model's
   windows are computed once and every variant decodes the same log-probs. A small weight grid is shown
   as sensitivity; it is scored on tts-dev itself, so its best cell is optimistic, and the defaults are
   what the headline uses.
3. **Commands** (``bench/commands.py``'s utterances, sessions and scoring): A no phrases, B phrases,
   C LM, D LM + phrases (pyctcdecode hotwords), on one server per decoder.
4. **Cost.** Final after ``stop`` over a real server, one session at a time: the file is sent at 4x real
   time, the client waits 0.5 s (as a live speaker's last words take to arrive), then sends ``stop`` and
   times the final; p50/p95 without and with the LM. CPU seconds per audio second: the process's CPU
   over the same sessions (server and client are in this process), and the beam search alone.

Writes bench/results/lm.json and lm.md, updates README's bench:lm section, prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lm_corpus  # noqa: E402
from common import (  # noqa: E402
    RESULTS,
    SHARED,
    STANDIN_MODEL,
    machine_info,
    markdown_table,
    percentile,
    tts_dev_rows,
    update_readme,
    write_results,
)

from streaming_asr.textmetrics import corpus_cer, corpus_wer  # noqa: E402

CACHE = Path("/tmp/streaming-asr-lm")
WORDLIST = Path("/usr/share/dict/american-english-large")
GRID = [(0.3, 1.0), (0.5, 1.0), (0.8, 1.0), (1.2, 1.0), (0.5, 0.0), (0.5, 2.0)]  # (--lm-weight, --word-score)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------- 1. text and LMs


def lm_text(refs: Sequence[str]) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write the LM texts (plain, + word list) and return them with the overlap evidence."""
    kjv = lm_corpus.corpus(lm_corpus.kjv_sentences())
    docs = lm_corpus.corpus(lm_corpus.python_doc_sentences())
    text = kjv + docs
    pool = lm_corpus.pool(SHARED / "tools")
    probes = [*refs, *pool]
    hits = lm_corpus.overlap(text, probes)
    kept = lm_corpus.without(text, hits)
    left = lm_corpus.overlap(kept, probes)
    glosses = lm_corpus.wordnet_glosses()
    gcide = lm_corpus.corpus(lm_corpus.SENTENCE_END.split(lm_corpus.gcide_plain()))
    evidence = {
        "sources": {"bible-kjv": len(kjv), "python3.11-doc": len(docs)},
        "sentences_kept": len(kept),
        "words_kept": sum(len(s.split()) for s in kept),
        "pool_sentences": len(pool),
        "dropped_sentences": len(text) - len(kept),
        "dropped_for": sorted(hits, key=lambda h: -len(hits[h]))[:12],
        "tts_dev_refs_in_text": sum(r in left for r in refs),
        "pool_sentences_in_text": len(left),
        "wordnet_gloss_probes": len(glosses),
        "glosses_in_gcide": len(lm_corpus.overlap(gcide, glosses)),
        "glosses_in_lm_text": len(lm_corpus.overlap(kept, glosses)),
    }
    if left:
        raise SystemExit(f"LM text still holds tts-dev/pool sentences: {list(left)[:5]}")
    CACHE.mkdir(parents=True, exist_ok=True)
    plain = lm_corpus.write_lines(kept, CACHE / "text.txt")
    texts = {"LM": plain}
    if WORDLIST.is_file():
        words = sorted({lm_corpus.words_of(w) for w in WORDLIST.read_text(errors="replace").split()} - {""})
        texts["LM + word list"] = lm_corpus.write_lines(kept + words, CACHE / "text-words.txt")
        evidence["wordlist_words"] = len(words)
    return texts, evidence


def build(text: Path, order: int = 3) -> Path:
    """The ARPA for a text, cached by the text's hash."""
    from streaming_asr.decoding.lm_build import build_arpa

    digest = hashlib.sha1(text.read_bytes()).hexdigest()[:12]
    out = CACHE / f"{text.stem}-{order}-{digest}.arpa"
    if not out.exists():
        build_arpa([str(text)], str(out), order=order)
    return out


def oov_rate(refs: Sequence[str], text: Path) -> float:
    vocab = set(text.read_text().split())
    words = [w for r in refs for w in r.split()]
    return sum(w not in vocab for w in words) / len(words)


# --------------------------------------------------------------------------- 2. tts-dev WER


class CachedForward:
    """The model's forward, memoised by window samples: every decoder variant sees the same log-probs."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.info = model.info
        self.memo: dict[bytes, Any] = {}

    def __call__(self, inputs: Sequence[Any]) -> list[Any]:
        out = []
        for x in inputs:
            key = hashlib.sha1(np.ascontiguousarray(x).tobytes()).digest()  # offline windows: plain arrays
            if key not in self.memo:
                self.memo[key] = self.model([x])[0]
            out.append(self.memo[key])
        return out


def decode_all(
    forward: CachedForward, audios: Sequence[np.ndarray], rescorer: Callable[[], Any] | None
) -> tuple[list[str], float]:
    """Hypotheses for every file and the CPU seconds it took (forward cached: decoding only)."""
    from streaming_asr.offline import transcribe_offline

    hyps = []
    begun = cpu_s()
    for audio in audios:
        hyps.append(transcribe_offline(forward, forward.info, audio, rescorer=rescorer() if rescorer else None).text)
    return hyps, cpu_s() - begun


def wer_part(model: Any, rows: Sequence[dict[str, Any]], arpas: dict[str, Path], grid: bool) -> dict[str, Any]:
    from streaming_asr.audio import read_audio
    from streaming_asr.decoding.lm import LmSettings, shared_rescorer

    forward = CachedForward(model)
    audios = [read_audio(str(r["wav"]), model.info.sample_rate)[0] for r in rows]
    refs = [r["reference"] for r in rows]
    audio_s = sum(len(a) for a in audios) / model.info.sample_rate
    greedy, _ = decode_all(forward, audios, None)  # fills the cache
    greedy, greedy_cpu = decode_all(forward, audios, None)
    variants: dict[str, Any] = {"greedy": {"hyps": greedy, "cpu_s": greedy_cpu}}
    for name, arpa in arpas.items():
        settings = LmSettings(str(arpa))
        hyps, cpu = decode_all(forward, audios, lambda s=settings: shared_rescorer(model.info, s))
        variants[name] = {"hyps": hyps, "cpu_s": cpu}
    slt = [i for i, r in enumerate(rows) if "slt" in r["voice"]]
    esp = [i for i, r in enumerate(rows) if r["voice"].startswith("espeak")]
    table = []
    for name, v in variants.items():
        h = v["hyps"]
        table.append(
            {
                "variant": name,
                "wer": corpus_wer(refs, h),
                "cer": corpus_cer(refs, h),
                "wer_espeak": corpus_wer([refs[i] for i in esp], [h[i] for i in esp]),
                "wer_slt": corpus_wer([refs[i] for i in slt], [h[i] for i in slt]),
                "decode_cpu_per_audio_s": (v["cpu_s"] - (greedy_cpu if name != "greedy" else 0)) / audio_s,
            }
        )
    for row in table:
        row["wer_vs_greedy"] = row["wer"] / table[0]["wer"]
    sensitivity = []
    if grid and arpas:
        name, arpa = next(reversed(arpas.items()))
        part = range(0, len(rows), 3)  # a third of the files: the grid is a sensitivity check, not the result
        for w, b in GRID:
            s = LmSettings(str(arpa), weight=w, word_score=b)
            hyps, _ = decode_all(forward, [audios[i] for i in part], lambda s=s: shared_rescorer(model.info, s))
            wer = corpus_wer([refs[i] for i in part], hyps)
            sensitivity.append({"lm": name, "files": len(part), "lm_weight": w, "word_score": b, "wer": wer})
    examples = [{"ref": refs[i], **{k: v["hyps"][i] for k, v in variants.items()}} for i in range(0, len(rows), 37)]
    return {"files": len(rows), "audio_s": audio_s, "table": table, "grid": sensitivity, "examples": examples}


# --------------------------------------------------------------------------- 3. commands


def commands_part(arpa: Path, quick: bool) -> dict[str, Any]:
    import commands as cb

    from streaming_asr.config import StreamConfig
    from streaming_asr.decoding.lm import LmSettings
    from tests.helpers import start_server_thread

    voices, _ = cb.available_voices()
    utterances = cb.build_utterances(voices, quick)
    for u in utterances:
        u.audio = cb.synthesise(u.voice, u.text)
    sessions = cb.build_sessions(utterances)
    runs = {}
    servers: list[tuple[dict[str, Any], tuple[tuple[str, Any], ...]]] = [
        ({}, (("A", None), ("B", cb.COMMANDS))),
        ({"lm": LmSettings(str(arpa))}, (("C", None), ("E", cb.COMMANDS))),  # phrases: the trie search + LM
        ({"lm": LmSettings(str(arpa), phrases="hotwords")}, (("D", cb.COMMANDS),)),
    ]
    for extra, variants in servers:
        handle = start_server_thread("standin", engine=StreamConfig(max_catchup_chunks=1), **extra)
        try:
            for name, phrases in variants:
                runs[name] = asyncio.run(cb.run_variant(handle.ws_url, sessions, phrases))
                print(f"commands {name}: {runs[name]['wall_s']:.1f} s", file=sys.stderr)
        finally:
            handle.stop()
    metrics = {v: cb.score(utterances, runs[v]["utterances"]) for v in runs}
    return {"utterances": len(utterances), "sessions": len(sessions), "metrics": metrics}


# --------------------------------------------------------------------------- 4. final after stop


async def final_after_stop(url: str, pcm: np.ndarray, rate: int) -> float:
    from clients.asr_client import AsrClient, Final, run_session_tasks

    stop_at: list[float] = []
    latency: list[float] = []
    async with AsrClient(url, sample_rate=rate) as client:
        step = rate // 10

        async def send() -> None:
            for i in range(0, len(pcm), step):
                await client.send_audio(pcm[i : i + step])
                await asyncio.sleep(0.025)  # 4x real time
            await asyncio.sleep(0.5)
            stop_at.append(time.perf_counter())
            await client.stop()

        async def receive() -> None:
            async for event in client:
                if isinstance(event, Final) and event.reason == "stop":
                    latency.append(time.perf_counter() - stop_at[0])

        await run_session_tasks(send(), receive())
    return latency[0]


def cost_part(arpa: Path, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    from streaming_asr.audio import read_audio
    from streaming_asr.decoding.lm import LmSettings
    from tests.helpers import start_server_thread

    pcms = [np.round(read_audio(str(r["wav"]), 16000)[0] * 32767).astype(np.int16) for r in rows]
    audio_s = sum(len(p) for p in pcms) / 16000
    out = {}
    for name, extra in (("greedy", {}), ("LM", {"lm": LmSettings(str(arpa))})):
        handle = start_server_thread("standin", **extra)
        try:
            asyncio.run(final_after_stop(handle.ws_url, pcms[0], 16000))  # warm-up (loads the LM)
            begun = cpu_s()
            lat = [asyncio.run(final_after_stop(handle.ws_url, p, 16000)) for p in pcms]
            cpu = cpu_s() - begun
        finally:
            handle.stop()
        out[name] = {
            "p50_ms": percentile(lat, 50) * 1000,  # type: ignore[operator]
            "p95_ms": percentile(lat, 95) * 1000,  # type: ignore[operator]
            "max_ms": max(lat) * 1000,
            "cpu_per_audio_s": cpu / audio_s,
        }
        print(f"final after stop, {name}: {out[name]}", file=sys.stderr)
    return {"sessions": len(pcms), "audio_s": audio_s, "variants": out}


# --------------------------------------------------------------------------- report


def report(
    text: dict[str, Any], oov: dict[str, float], wer: dict[str, Any], cmd: dict[str, Any], cost: dict[str, Any]
) -> str:
    from commands import cell

    t = wer["table"]
    base = t[0]["wer"]
    lines = [
        f"LM text: Debian's King James Bible ({text['sources']['bible-kjv']:,} sentences) and the Python "
        f"documentation's prose ({text['sources']['python3.11-doc']:,}), {text['dropped_sentences']:,} sentences "
        f"dropped for holding a sentence of tts-dev's source pool (fortunes + WordNet glosses, "
        f"{text['pool_sentences']:,} sentences); left: {text['sentences_kept']:,} sentences, "
        f"{text['words_kept']:,} words, of which **{text['tts_dev_refs_in_text']} tts-dev references** and "
        f"{text['pool_sentences_in_text']} pool sentences occur in it. dict-gcide left out: "
        f"{text['glosses_in_gcide']:,} of {text['wordnet_gloss_probes']:,} WordNet glosses (6+ words) occur in it "
        f"verbatim, against {text['glosses_in_lm_text']} in the LM text. 3-gram, IRSTLM Witten-Bell "
        f"(`streaming-asr lm build`); tts-dev OOV rate: " + ", ".join(f"{k} {v:.1%}" for k, v in oov.items()) + ".",
        "",
        f"tts-dev, {wer['files']} files ({wer['audio_s'] / 60:.1f} min), offline windowing, shipped defaults "
        "(`--lm-weight 0.5 --word-score 1.0 --beam-width 64`):",
        "",
        markdown_table(
            t,
            {
                "variant": "decoder",
                "wer": "WER",
                "wer_vs_greedy": "× greedy",
                "cer": "CER",
                "wer_espeak": "WER espeak",
                "wer_slt": "WER slt",
                "decode_cpu_per_audio_s": "beam search CPU s / audio s",
            },
        ),
        "",
        f"Relative WER reduction with the LM: **{1 - t[1]['wer'] / base:.1%}**"
        + (f"; with the word list: **{1 - t[2]['wer'] / base:.1%}**" if len(t) > 2 else "")
        + " (target ≥ 15 %).",
    ]
    if wer["grid"]:
        lines += [
            "",
            f"Sensitivity ({wer['grid'][0]['lm']}, every third tts-dev file: {wer['grid'][0]['files']}; scored on "
            "tts-dev itself, so the best cell is optimistic):",
            "",
            markdown_table(wer["grid"], {"lm_weight": "--lm-weight", "word_score": "--word-score", "wer": "WER"}),
        ]
    m = cmd["metrics"]
    rows = []
    for v, label in (
        ("A", "greedy"),
        ("B", "greedy + phrases (trie)"),
        ("C", "LM"),
        ("D", "LM + phrases as pyctcdecode hotwords (`--lm-phrases hotwords`)"),
        ("E", "LM + phrases in the trie search (default)"),
    ):
        rows.append(
            {
                "variant": f"{v}: {label}",
                "correct": cell(m[v], "accuracy", "correct", "commands"),
                "wrong": cell(m[v], "wrong_rate", "wrong", "commands"),
                "missed": cell(m[v], "miss_rate", "missed", "commands"),
                "false": cell(m[v], "false_trigger_rate", "false_triggers", "distractors"),
                "cer": cell(m[v], "command_cer", None, None),
                "dcer": cell(m[v], "distractor_cer", None, None),
            }
        )
    c = cost["variants"]
    lines += [
        "",
        f"Commands bench ({cmd['utterances']} utterances, {cmd['sessions']} sessions), LM as above:",
        "",
        markdown_table(
            rows,
            {
                "variant": "variant",
                "correct": "command accuracy ↑",
                "wrong": "wrong ↓",
                "missed": "missed ↓",
                "false": "false triggers ↓",
                "cer": "CER, command span ↓",
                "dcer": "CER, distractors ↓",
            },
        ),
        "",
        f"Final after `stop`, real server, {cost['sessions']} tts-dev sessions one at a time "
        f"({cost['audio_s']:.0f} s of audio):",
        "",
        markdown_table(
            [{"variant": k, **v} for k, v in c.items()],
            {
                "variant": "finals",
                "p50_ms": "p50 ms",
                "p95_ms": "p95 ms",
                "max_ms": "max ms",
                "cpu_per_audio_s": "CPU s / audio s",
            },
        ),
        "",
        f"LM finals: p95 {c['LM']['p95_ms']:.0f} ms (target ≤ 400 ms), "
        f"CPU {c['LM']['cpu_per_audio_s'] / c['greedy']['cpu_per_audio_s']:.2f}× "
        "greedy's. Regenerate with `python bench/lm.py`.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (no README update)")
    args = parser.parse_args(argv)
    begun = time.perf_counter()
    rows = tts_dev_rows()
    refs = [r["reference"] for r in rows]
    texts, evidence = lm_text(refs)
    arpas = {name: build(t) for name, t in texts.items()}
    oov = {name: oov_rate(refs, t) for name, t in texts.items()}
    print(f"LM text and ARPA ready ({time.perf_counter() - begun:.0f} s): {evidence}", file=sys.stderr)

    from streaming_asr.model import CtcModel

    model = CtcModel.load(str(STANDIN_MODEL), threads=2)
    sample = rows[::5] if args.quick else rows
    wer = wer_part(model, sample, arpas, grid=not args.quick)
    print(markdown_table(wer["table"], list(wer["table"][0])), file=sys.stderr)
    cmd = commands_part(arpas["LM"], args.quick)
    cost = cost_part(arpas["LM"], rows[1::25] if args.quick else rows[1::5])
    md = report(evidence, oov, wer, cmd, cost)
    md += f" Full run {time.perf_counter() - begun:.0f} s{' (--quick)' if args.quick else ''}."
    print(md)
    data = {
        "quick": args.quick,
        "machine": machine_info(),
        "text": evidence,
        "oov": oov,
        "arpas": {k: str(v) for k, v in arpas.items()},
        "wer": wer,
        "commands": cmd,
        "cost": cost,
    }
    name = "lm-quick" if args.quick else "lm"
    write_results(name, data)
    (RESULTS / f"{name}.md").write_text(md + "\n")
    if not args.quick and not update_readme("lm", md):
        print("README has no bench:lm markers; wrote only the md file", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
