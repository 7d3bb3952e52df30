"""Fuzzy phrase spotting in a decoded segment: candidate word windows, bit-parallel edit distance, content-word check.

`PhraseFinder` is the `find` half of `PhraseBiaser` (a mixin over the biaser's phrase tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .levenshtein import bit_parallel_distances
from .trie import normalize_phrase

#: In :meth:`PhraseBiaser.find`, every phrase word longer than 3 characters must have at least this
#: share of its characters matched in the alignment, so that a different content word
#: ("... kitchen FAN" for "... kitchen LIGHTS") is not accepted on the strength of the others.
MIN_WORD_MATCH = 0.5
#: :meth:`PhraseBiaser.find` spends at most this many pure-Python DP cells (window length x phrase
#: length, ~0.3 us each) per call on that content-word check. It is needed only for windows about
#: to be reported whose edit distance could leave a content word mostly unmatched (1000 commands
#: against 20 s of speech: ~1000 cells); past the cap such windows are passed over (not reported).
FIND_CHECK_CELLS = 250_000
#: :meth:`PhraseBiaser.find` runs at most this many steps (lane x character x machine word, a few
#: tens of ns each) of its bit-parallel edit distance per call, lanes with the best lower bound on
#: their distance first; the rest are not reported. 1000 commands sharing 22 words against 60
#: spoken words need ~0.3 M; only pathological lists come near the cap (1000 phrases of ten
#: one-letter words against 500 one-letter words: ~10 M).
FIND_SCAN_STEPS = 2_000_000


@dataclass(frozen=True)
class PhraseMatch:
    """A phrase found in a decoded segment: ``phrase`` as the client wrote it, inclusive frame span
    of the matched words, ``score`` = character similarity 0..1."""

    phrase: str
    start_frame: int
    end_frame: int
    score: float


class PhraseFinder:
    """`find`: which of the session's phrases a decoded segment contains (mixed into PhraseBiaser)."""

    # the phrase tables PhraseBiaser builds (declared here for the type checker)
    phrases: list[tuple[str, list[str]]]
    min_score: float
    _alphabet: dict[str, int]
    _targets: list[str]
    _char_cols: dict[str, int]
    _target_k: np.ndarray
    _target_len: np.ndarray
    _target_counts: np.ndarray
    _peq: np.ndarray
    _target_min_long: np.ndarray

    def find(self, words: Sequence[tuple[str, int, int, float]]) -> list[PhraseMatch]:
        """Phrases present in a decoded segment's ``words`` (word, start_frame, end_frame,
        confidence): fuzzy (character edit-distance similarity over word windows), non-overlapping,
        best first.

        Windows of k-2..k+2 words (k = a phrase's word count) that pass two cheap lower bounds on
        the edit distance get their exact distance to the phrase from a bit-parallel Levenshtein
        pass (numpy, all windows and phrases at once); those scoring at least ``min_score`` are
        taken best first, skipping any that overlaps one already taken. The content-word check
        (MIN_WORD_MATCH) needs a full alignment, so it runs only on a window about to be taken and
        only when the distance leaves a content word room to be mostly unmatched.

        The work is capped for pathological phrase lists (hundreds of near-identical phrases
        against a segment made of the same few words): at most FIND_SCAN_STEPS steps of the
        bit-parallel pass (the windows with the best lower bound first) and FIND_CHECK_CELLS cells
        of content-word checks per call; windows past the caps are not reported. Ordinary phrase
        lists and speech stay far below both."""
        if not self.phrases or not words:
            return []
        tokens = [" ".join(normalize_phrase(w[0], self._alphabet)) for w in words]
        n = len(tokens)
        lanes, w_len_of = self._plausible_windows(tokens)
        lane_first, lane_pi, need, sizes, bound = lanes
        if lane_first.size == 0:
            return []
        # One scan lane per (first word, phrase): its windows are prefixes of one another.
        cost = need * np.maximum(1, (self._target_len[lane_pi].astype(np.int64) + 63) // 64)
        if int(cost.sum()) > FIND_SCAN_STEPS:
            order = np.argsort(bound, kind="stable")
            keep = np.sort(order[np.cumsum(cost[order]) <= FIND_SCAN_STEPS])
            lane_first, lane_pi, need, sizes = (a[keep] for a in (lane_first, lane_pi, need, sizes))
        # The candidate windows: bit d of a lane's ``sizes`` = window of k - 2 + d words.
        k = self._target_k[lane_pi].astype(np.int64)
        parts = []
        for d in range(5):
            lane = np.flatnonzero((sizes >> d) & 1)
            size = k[lane] + (d - 2)
            parts.append((lane, size, w_len_of[size, lane_first[lane]]))
        cand_lane, size, w_len = (np.concatenate(p) for p in zip(*parts))
        first, pi = lane_first[cand_lane], lane_pi[cand_lane]
        text = " ".join(tokens)
        offsets = np.zeros(n + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(t) + 1 for t in tokens])
        dist = self._distances(text, offsets[lane_first], lane_pi, need, cand_lane, w_len)
        longest = np.maximum(np.maximum(w_len, self._target_len[pi]), 1)
        score = 1.0 - dist / longest
        ok = score >= self.min_score
        first, size, pi, w_len, dist, score, longest = (a[ok] for a in (first, size, pi, w_len, dist, score, longest))
        # _match_score() is needed only where it could still say 0: where its row-minimum cut-off
        # could fire (distance over the limit), or where the distance leaves a content word room
        # to be mostly unmatched (a word of L letters has at least L - dist of them matched).
        lmin = self._target_min_long[pi]
        check = (dist > (1.0 - self.min_score) * longest) | ((lmin - dist) < MIN_WORD_MATCH * lmin)
        # Best first; ties prefer the longer window, then the earlier one, then the earlier phrase.
        order = np.lexsort((pi, first, -size, -score))
        tail = order[:0]
        if self.min_score <= 0:
            # _match_score() answers 0.0 for a failed word check, which such a floor still accepts:
            # those windows join the score-0 windows at the end of the order.
            zero = score[order] <= 0
            order, tail = order[~zero], order[zero]
        last = first + size - 1
        used_np = np.zeros(n, dtype=bool)
        used = [False] * n
        budget = FIND_CHECK_CELLS
        failed: list[int] = []
        matches: list[PhraseMatch] = []

        def take(order: np.ndarray) -> None:
            nonlocal budget
            pos, step = 0, 64
            while pos < order.size and len(matches) < n:
                chunk = order[pos : pos + step]
                pos += step
                step = min(4 * step, 16384)
                if matches:  # drop what overlaps the windows taken so far, all at once
                    taken = np.concatenate(([0], np.cumsum(used_np)))
                    chunk = chunk[taken[last[chunk] + 1] == taken[first[chunk]]]
                if budget <= 0:
                    failed.extend(chunk[check[chunk]].tolist())
                    chunk = chunk[~check[chunk]]
                for j in chunk.tolist():
                    f, e = int(first[j]), int(last[j])
                    if any(used[f : e + 1]):
                        continue
                    p = int(pi[j])
                    if check[j]:
                        cells = (int(w_len[j]) + 1) * (int(self._target_len[p]) + 1)
                        if cells > budget:
                            budget = 0
                            failed.append(j)
                            continue
                        budget -= cells
                        window = text[int(offsets[f]) : int(offsets[f] + w_len[j])]
                        # It answers the same score, or 0.0 when a content word is mostly unmatched.
                        if _match_score(window, self._targets[p], self.min_score) != score[j]:
                            failed.append(j)
                            continue
                    used[f : e + 1] = [True] * (e - f + 1)
                    used_np[f : e + 1] = True
                    phrase = self.phrases[p][0]
                    matches.append(PhraseMatch(phrase, int(words[f][1]), int(words[e][2]), float(score[j])))

        take(order)
        if self.min_score <= 0:
            tail = np.concatenate((tail, np.array(failed, dtype=np.int64)))
            score[tail] = 0.0
            check[:] = False
            take(tail[np.lexsort((pi[tail], first[tail], -size[tail]))])
        return matches

    def _plausible_windows(self, tokens: list[str]) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """The windows of k-2..k+2 words (k = a phrase's word count) that can still reach
        ``min_score``, as scan lanes: per distinct (first word, phrase), the first word, the
        phrase, the characters to scan (the longest such window), a bit mask of the window sizes
        (bit d: k - 2 + d words) and the smallest lower bound / max(len) among them; plus the
        window lengths by (word count, first word).

        Two lower bounds on the edit distance prune: the length difference, and max(len) - the
        sum over characters of min(count in window, count in phrase); numpy checks both for all
        windows and phrases at once (sessions may hold 1000 phrases)."""
        n = len(tokens)
        cols = self._char_cols
        counts = np.zeros((n + 1, len(cols) + 1), dtype=np.int64)  # cumulative; last col: length
        for i, tok in enumerate(tokens):
            for ch in tok:
                counts[i + 1, cols.get(ch, 0)] += 1
            counts[i + 1, -1] = len(tok)
        counts = np.cumsum(counts, axis=0).astype(np.int32)
        max_size = min(n, int(self._target_k.max()) + 2)
        # Per window size: character counts (spaces between words included) and lengths of the
        # windows by first word; rows past the last start stay empty.
        win_of = np.zeros((max_size + 1, n, len(cols) + 1), dtype=np.int32)
        for size in range(1, max_size + 1):
            win = counts[size:] - counts[: n + 1 - size]
            win[:, 0] += size - 1
            win[:, -1] += size - 1
            win_of[size, : n + 1 - size] = win
        w_len_of = win_of[:, :, -1].astype(np.int64)
        # The largest distance that can still reach min_score, as a function of max(len): an
        # integer distance d satisfies d <= slack * L exactly when d <= floor(slack * L), and
        # that floor is non-decreasing in L, so for a pair it is the larger of the two sides'.
        slack = 1.0 - self.min_score
        t_len_all = self._target_len.astype(np.int32)
        t_thr_all = np.floor(slack * t_len_all).astype(np.int32)
        lanes: list[tuple[np.ndarray, ...]] = []
        for k in np.unique(self._target_k).tolist():
            phr = np.flatnonzero(self._target_k == k)
            t_len, t_thr = t_len_all[phr], t_thr_all[phr]
            tgt = self._target_counts[phr].astype(np.int32)
            used_cols = np.flatnonzero(tgt.any(axis=0)).tolist()
            sizes = np.zeros((n, phr.size), dtype=np.uint8)
            need = np.zeros((n, phr.size), dtype=np.int32)
            bound = np.full((n, phr.size), np.inf, dtype=np.float32)
            for d in range(5):
                size = k - 2 + d
                if not 1 <= size <= max_size:
                    continue
                starts = n + 1 - size
                win = win_of[size, :starts]
                w_len = win[:, -1]
                w_thr = np.floor(slack * w_len).astype(np.int32)
                thr = np.maximum(w_thr[:, None], t_thr[None, :])
                ok = np.abs(w_len[:, None] - t_len[None, :]) <= thr
                rows = np.flatnonzero(ok.any(axis=1))
                if rows.size == 0:
                    continue
                if rows.size == starts:  # views, not copies
                    rows = slice(0, starts)  # type: ignore[assignment]
                longest = np.maximum(w_len[rows, None], t_len[None, :])
                lower = longest.copy()
                for c in used_cols:
                    lower -= np.minimum(win[rows, c][:, None], tgt[None, :, c])
                ok = ok[rows] & (lower <= thr[rows])
                sizes[rows] |= ok.view(np.uint8) << np.uint8(d)
                need[rows] = np.where(ok, w_len[rows, None], need[rows])  # sizes ascend
                ratio = lower.astype(np.float32) / longest.astype(np.float32)
                bound[rows] = np.where(ok, np.minimum(bound[rows], ratio), bound[rows])
            wi, pj = np.nonzero(sizes)
            lanes.append((wi, phr[pj], need[wi, pj].astype(np.int64), sizes[wi, pj], bound[wi, pj]))
        lane_arrays = tuple(np.concatenate(parts) for parts in zip(*lanes))
        return lane_arrays, w_len_of

    def _distances(
        self,
        text: str,
        lane_base: np.ndarray,
        lane_pi: np.ndarray,
        need: np.ndarray,
        cand_lane: np.ndarray,
        cand_len: np.ndarray,
    ) -> np.ndarray:
        """Edit distance of each candidate window to its phrase: lane ``cand_lane`` scans
        ``text`` from ``lane_base`` for ``need`` characters against phrase ``lane_pi``, and the
        candidate reads its distance after ``cand_len`` of them. Lanes run in groups by how many
        machine words their phrase needs (one 32-bit, one 64-bit, several 64-bit)."""
        n_codes = self._peq.shape[1]
        codes = np.array([self._char_cols.get(ch, n_codes - 1) for ch in text] or [0], dtype=np.int64)
        dist = np.empty(cand_len.size, dtype=np.int64)
        lane_len = self._target_len[lane_pi]
        for lo, hi in ((0, 32), (32, 64), (64, None)):
            in_group = (lane_len > lo) & ((lane_len <= hi) if hi is not None else True)
            if not in_group.any():
                continue
            if hi == 32:
                peq = [self._peq[:, :, 0].astype(np.uint32).reshape(-1)]
            else:
                n_words = 1 if hi == 64 else (int(lane_len[in_group].max()) + 63) // 64
                peq = [np.ascontiguousarray(self._peq[:, :, w]).reshape(-1) for w in range(n_words)]
            group_id = np.cumsum(in_group) - 1
            cands = np.flatnonzero(in_group[cand_lane])
            dist[cands] = bit_parallel_distances(
                peq,
                n_codes,
                codes,
                lane_base[in_group],
                lane_pi[in_group] * n_codes,
                self._target_len[lane_pi[in_group]],
                need[in_group],
                group_id[cand_lane[cands]],
                cand_len[cands],
            )
        return dist


def _match_score(hyp: str, ref: str, floor: float = 0.0) -> float:
    """1 - edit_distance/max_len of two space-joined word strings; 0 if some content word of
    ``ref`` (over 3 letters) is mostly unmatched in the alignment, or once the score is sure to
    fall below ``floor``."""
    la, lb = len(hyp), len(ref)
    limit = (1.0 - floor) * max(la, lb, 1)  # largest edit distance that can still reach floor
    # dp[i][j]: edit distance hyp[:i] vs ref[:j]
    dp = [[0] * (lb + 1) for _ in range(la + 1)]
    for j in range(lb + 1):
        dp[0][j] = j
    for i in range(1, la + 1):
        row, prev = dp[i], dp[i - 1]
        row[0] = i
        a = hyp[i - 1]
        for j in range(1, lb + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a != ref[j - 1]))
        if min(row) > limit:  # row minima never decrease: the distance is already too large
            return 0.0
    dist = dp[la][lb]
    # Backtrace: which ref characters were matched exactly.
    matched = [False] * lb
    i, j = la, lb
    while i > 0 and j > 0:
        if dp[i][j] == dp[i - 1][j - 1] + (hyp[i - 1] != ref[j - 1]):
            matched[j - 1] = hyp[i - 1] == ref[j - 1]
            i, j = i - 1, j - 1
        elif dp[i][j] == dp[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    pos = 0
    for word in ref.split(" "):
        if len(word) > 3 and sum(matched[pos : pos + len(word)]) < MIN_WORD_MATCH * len(word):
            return 0.0
        pos += len(word) + 1
    return 1.0 - dist / max(la, lb, 1)


# ---------------------------------------------------------------------- alignment
