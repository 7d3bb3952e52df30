"""CTC forced alignment (frame times for beam-search output) and grouping an alignment into words."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .trie import NEG_INF


def forced_align(log_probs: np.ndarray, labels: Sequence[int], blank_id: int) -> list[tuple[int, int, int, float]]:
    """CTC Viterbi alignment of a label sequence: per label (label id, first frame, last frame
    inclusive, mean posterior prob over its frames). Used to give word times to beam-search
    output. Raises ValueError when the labels cannot fit in the frames."""
    labels = [int(x) for x in labels]
    if not labels:
        return []
    lp = np.asarray(log_probs, dtype=np.float64)
    T = lp.shape[0]
    L = len(labels)
    # Extended sequence: blank, l1, blank, l2, ..., lL, blank
    ext = np.full(2 * L + 1, blank_id, dtype=np.int64)
    ext[1::2] = labels
    S = ext.shape[0]
    # A skip (s-2 -> s) is allowed into a label that differs from the label two states back.
    can_skip = np.zeros(S, dtype=bool)
    can_skip[3::2] = ext[3::2] != ext[1:-2:2]
    emit = lp[:, ext]  # (T, S)
    delta = np.full(S, NEG_INF)
    delta[0] = emit[0, 0]
    if S > 1:
        delta[1] = emit[0, 1]
    back = np.zeros((T, S), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    # Per frame: the best of stay / step / skip, the first of equals (as argmax would pick).
    skip_ok = can_skip[2:]
    for t in range(1, T):
        best = delta.copy()
        choice = back[t]
        take = delta[:-1] > best[1:]
        np.copyto(best[1:], delta[:-1], where=take)
        choice[1:][take] = 1
        take = (delta[:-2] > best[2:]) & skip_ok
        np.copyto(best[2:], delta[:-2], where=take)
        choice[2:][take] = 2
        best += emit[t]
        delta = best
    end = S - 1 if S == 1 or delta[S - 1] >= delta[S - 2] else S - 2
    if not np.isfinite(delta[end]):
        raise ValueError(f"{L} labels cannot be aligned to {T} frames")
    state = np.empty(T, dtype=np.int64)
    s = end
    for t in range(T - 1, -1, -1):
        state[t] = s
        s -= int(back[t, s])
    probs = np.exp(lp[np.arange(T), ext[state]])
    out: list[tuple[int, int, int, float]] = []
    for k, label in enumerate(labels):
        frames = np.flatnonzero(state == 2 * k + 1)
        out.append((label, int(frames[0]), int(frames[-1]), float(probs[frames].mean())))
    return out


def aligned_words(
    alignment: Sequence[tuple[int, int, int, float]], vocab: Sequence[str], delimiter_id: int
) -> list[tuple[str, int, int, float]]:
    """Group a :func:`forced_align` result into words: (word, first frame, last frame,
    mean of its letters' posteriors) -- the input :meth:`PhraseBiaser.find` takes."""
    words: list[tuple[str, int, int, float]] = []
    current: list[tuple[int, int, int, float]] = []

    def flush() -> None:
        if current:
            text = "".join(vocab[c[0]] for c in current)
            conf = sum(c[3] for c in current) / len(current)
            words.append((text, current[0][1], current[-1][2], conf))
            current.clear()

    for item in alignment:
        if item[0] == delimiter_id:
            flush()
        else:
            current.append(item)
    flush()
    return words
