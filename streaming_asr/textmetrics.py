"""Edit distance and the error rates built on it (tests, benches, fuzzy command matching)."""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(a: Sequence[object], b: Sequence[object]) -> int:
    """Levenshtein distance between two sequences (characters of a string, or a list of words)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def wer(ref: str, hyp: str) -> float:
    """Word error rate of one hypothesis."""
    return corpus_wer([ref], [hyp])


def cer(ref: str, hyp: str) -> float:
    """Character error rate of one hypothesis."""
    return corpus_cer([ref], [hyp])


def corpus_wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word errors over all pairs / reference words (not a mean of per-utterance rates)."""
    errors = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps))
    return errors / max(1, sum(len(r.split()) for r in refs))


def corpus_cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / max(1, sum(len(r) for r in refs))
