"""The fine-tuning bench's speech: sentences from outside tts-dev's sources, spoken by the slt voices.

tts-dev's slt utterances are flite ``slt`` and festival ``cmu_us_slt_arctic_hts`` over fortunes and WordNet
glosses, voices the stand-in never heard. Training and model-selection sets are synthesised here with the
same two voices (Debian's ``flite`` and ``festvox-us-slt-hts``) on sentences from the King James Bible and
the Python documentation (``lm_corpus.py``), with every sentence that holds a fortunes / WordNet pool
sentence dropped. A fifth of the training set is spoken by espeak-ng voices the stand-in was trained on,
as rehearsal against forgetting them, plus a set of espeak-ng utterances alone that brings their share to
about a third. Random speed and pitch per utterance, 16 kHz int16 WAV, written with
a ``manifest.tsv`` in the layout of ``../shared/data/*/manifest.tsv`` (id, wav, duration_s, voice,
reference); the eval set's sentences are disjoint from the training set's.
"""

from __future__ import annotations

import random
import subprocess
import tempfile
from collections.abc import Sequence
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ESPEAK_TRAINED = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029"]  # in the stand-in's training pool
ESPEAK_VARIANTS = ["", "m1", "m3", "f1", "f2"]
RATE = 16000


def speak(job: tuple[str, str, str, int]) -> np.ndarray | None:
    """One utterance as 16 kHz float32, or None when the engine fails or says almost nothing."""
    text, engine, voice, seed = job
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp, "a.wav")
        if engine == "flite":
            cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={rng.uniform(0.8, 1.3):.2f}"]
            cmd += ["--setf", f"int_f0_target_mean={rng.randint(150, 210)}", "-t", text.lower(), "-o", str(wav)]
        elif engine == "festival":
            script = Path(tmp, "t.txt")
            script.write_text(text.lower())
            stretch = f"(Parameter.set 'Duration_Stretch {rng.uniform(0.85, 1.25):.2f})"
            cmd = ["text2wave", "-eval", f"(voice_{voice})", "-eval", stretch, str(script), "-o", str(wav)]
        else:
            cmd = ["espeak-ng", "-v", voice, "-s", str(rng.randint(130, 200)), "-p", str(rng.randint(30, 70))]
            cmd += ["-w", str(wav), text.lower()]
        if subprocess.run(cmd, capture_output=True).returncode != 0 or not wav.exists():
            return None
        audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != RATE:
        audio = soxr.resample(audio, rate, RATE)
    return audio.astype(np.float32) if audio.size >= RATE // 2 else None


def voices(rng: random.Random, rehearsal: float) -> tuple[str, str]:
    """A voice: espeak-ng (trained-on voices) with probability ``rehearsal``, else one of the two slt voices."""
    if rng.random() < rehearsal:
        variant = rng.choice(ESPEAK_VARIANTS)
        return "espeak", rng.choice(ESPEAK_TRAINED) + (f"+{variant}" if variant else "")
    return ("flite", "slt") if rng.random() < 0.55 else ("festival", "cmu_us_slt_arctic_hts")


def synthesise_set(sentences: Sequence[str], out: Path, count: int, seed: int, rehearsal: float) -> Path:
    """Write ``count`` utterances and their manifest under ``out`` (cached: an existing manifest is kept)."""
    manifest = out / "manifest.tsv"
    if manifest.exists():
        return manifest
    rng = random.Random(seed)
    picked = rng.sample(list(sentences), count)
    jobs = []
    for text in picked:
        engine, voice = voices(rng, rehearsal)
        jobs.append((text, engine, voice, rng.randrange(1 << 30)))
    (out / "wav").mkdir(parents=True, exist_ok=True)
    rows = ["id\twav\tduration_s\tvoice\treference"]
    with Pool(2) as pool:
        for i, (job, audio) in enumerate(zip(jobs, pool.imap(speak, jobs, chunksize=8))):
            if audio is None:
                continue
            name = f"wav/{out.name}-{i:05d}.wav"
            sf.write(str(out / name), audio, RATE, subtype="PCM_16")
            rows.append(f"{out.name}-{i:05d}\t{name}\t{audio.size / RATE:.3f}\t{job[1]}:{job[2]}\t{job[0]}")
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def join_manifests(parts: Sequence[Path], out: Path) -> Path:
    """One manifest of several (absolute wav paths, so it can live anywhere)."""
    rows = ["id\twav\tduration_s\tvoice\treference"]
    for part in parts:
        for line in part.read_text().splitlines()[1:]:
            uid, wav, rest = line.split("\t", 2)
            rows.append(f"{uid}\t{(part.parent / wav).resolve()}\t{rest}")
    out.write_text("\n".join(rows) + "\n")
    return out
