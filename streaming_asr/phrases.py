"""Phrase-biased CTC decoding, CTC forced alignment and fuzzy phrase spotting.

Pure, synchronous numpy/Python code: the streaming session calls it on one segment's CTC
log-probabilities (``(T, V)``, natural-log softmax, 20 ms frames).

* :class:`PhraseBiaser` ``.decode`` -- CTC prefix beam search with a character trie of the
  client's phrases ("hotword" contextual biasing with failure rollback), so that an acoustically
  ambiguous segment is resolved toward a phrase the client said it expects.
* :func:`forced_align` -- CTC Viterbi alignment, to give frame times to beam-search output (the
  beam search tracks prefixes, not paths).
* :func:`aligned_words` -- groups an alignment into ``(word, start, end, confidence)`` tuples.
* :class:`PhraseBiaser` ``.find`` -- which phrases a decoded segment contains, fuzzily.

See ``docs/phrases.md`` for the algorithm and the ``boost`` knob.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["PhraseMatch", "PhraseBiaser", "forced_align", "aligned_words", "normalize_phrase"]

NEG_INF = float("-inf")

#: Default bonus (nats) per matched phrase character; see docs/phrases.md for how it was chosen.
DEFAULT_BOOST = 1.5
#: Default minimum similarity for :meth:`PhraseBiaser.find`.
DEFAULT_MIN_SCORE = 0.7
#: Per frame, only the TOP_K most likely tokens whose log-prob exceeds MIN_TOKEN_LOG_PROB extend
#: prefixes: tokens below that cannot win however they are boosted, and the pruning keeps the
#: Python loop to T x beam x TOP_K.
TOP_K = 6
MIN_TOKEN_LOG_PROB = -10.0
#: Frames whose blank probability exceeds this extend nothing (cheap path: silence between words).
BLANK_SKIP_LOG_PROB = math.log(0.999)
#: In :meth:`PhraseBiaser.find`, every phrase word longer than 3 characters must have at least this
#: share of its characters matched in the alignment, so that a different content word
#: ("... kitchen FAN" for "... kitchen LIGHTS") is not accepted on the strength of the others.
MIN_WORD_MATCH = 0.5


@dataclass(frozen=True)
class PhraseMatch:
    """A phrase found in a decoded segment: ``phrase`` as the client wrote it, inclusive frame span
    of the matched words, ``score`` = character similarity 0..1."""

    phrase: str
    start_frame: int
    end_frame: int
    score: float


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for Python floats (faster than numpy on scalars)."""
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def _alphabet(vocab: Sequence[str], blank_id: int, delimiter_id: int) -> dict[str, int]:
    """Single-character tokens (letters, apostrophe) -> id; specials like ``<unk>`` excluded."""
    return {
        tok: i
        for i, tok in enumerate(vocab)
        if len(tok) == 1 and i not in (blank_id, delimiter_id)
    }


def normalize_phrase(phrase: str, alphabet: dict[str, int]) -> list[str]:
    """Split ``phrase`` into words of vocabulary characters, in the vocabulary's case (upper
    case for wav2vec2).

    Whitespace, ``-``, ``_``, ``/`` and ``|`` separate words; any other character the vocabulary
    lacks (digits, punctuation) is dropped, so "Set a timer, 10 min" -> ["SET", "A", "TIMER", "MIN"].
    """
    words: list[str] = []
    current: list[str] = []
    for ch in phrase:
        if ch.upper() in alphabet:
            current.append(ch.upper())
        elif ch.lower() in alphabet:
            current.append(ch.lower())
        elif ch.isspace() or ch in "-_/|":
            if current:
                words.append("".join(current))
                current = []
    if current:
        words.append("".join(current))
    return words


class _Trie:
    """Character trie over phrase label sequences with word-boundary failure links.

    Node 0 is the root. For each node: ``pending`` = bonus a prefix holds while its tail sits on
    this node without having completed a phrase (taken back when the path breaks off), ``gain`` =
    bonus committed for good when a prefix reaches this node and it ends a phrase.
    """

    def __init__(self, sequences: Sequence[Sequence[int]], boost: float, delimiter_id: int) -> None:
        self.children: list[dict[int, int]] = [{}]
        self.parent: list[int] = [-1]
        self.depth: list[int] = [0]
        self.terminal: list[bool] = [False]
        labels: list[tuple[int, ...]] = [()]
        for seq in sequences:
            node = 0
            for c in seq:
                nxt = self.children[node].get(c)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][c] = nxt
                    self.children.append({})
                    self.parent.append(node)
                    self.depth.append(self.depth[node] + 1)
                    self.terminal.append(False)
                    labels.append(labels[node] + (c,))
                node = nxt
            self.terminal[node] = True
        n = len(self.children)
        index = {lab: i for i, lab in enumerate(labels)}
        # Failure link: the longest proper suffix of the node's label sequence that starts right
        # after a delimiter (a word start) and is itself a trie node; root if none.
        self.fail = [0] * n
        for i in range(1, n):
            lab = labels[i]
            for k in range(1, len(lab)):
                if lab[k - 1] == delimiter_id and lab[k:] in index:
                    self.fail[i] = index[lab[k:]]
                    break
        # base = depth of the deepest phrase end on the path (bonus up to there is committed).
        base = [0] * n
        self.pending = [0.0] * n
        self.gain = [0.0] * n
        for i in range(1, n):  # parents are created before children
            p = self.parent[i]
            if self.terminal[i]:
                base[i] = self.depth[i]
                self.gain[i] = boost * (self.depth[i] - base[p])
            else:
                base[i] = base[p]
                self.pending[i] = boost * (self.depth[i] - base[i])
        # A segment may end right before a phrase's closing delimiter: that completes it too.
        self.end_gain = [0.0] * n
        for i in range(n):
            child = self.children[i].get(delimiter_id)
            if child is not None and self.terminal[child]:
                self.end_gain[i] = self.gain[child]
        self._step_cache: dict[tuple[int, int, bool], int] = {}

    def step(self, node: int, label: int, at_word_start: bool) -> int:
        """Trie node after emitting ``label`` from ``node``; a phrase may start only at a word start."""
        key = (node, label, at_word_start)
        hit = self._step_cache.get(key)
        if hit is not None:
            return hit
        n = node
        while True:
            child = self.children[n].get(label)
            if child is not None and (n != 0 or at_word_start):
                result = child
                break
            if n == 0:
                result = 0
                break
            n = self.fail[n]
        self._step_cache[key] = result
        return result


class PhraseBiaser:
    """Biased CTC decoding toward a session's phrases, and spotting of those phrases.

    ``vocab`` lists token strings by id (wav2vec2: ``<pad>`` blank, ``|`` delimiter, letters, ``'``).
    ``boost`` is the bonus in nats per matched phrase character (delimiters between words included);
    0 or an empty phrase list gives plain prefix beam search. ``min_score`` is the similarity a
    word window needs for :meth:`find` to report it.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        blank_id: int,
        delimiter_id: int,
        phrases: Sequence[str],
        boost: float = DEFAULT_BOOST,
        beam_width: int = 8,
        min_score: float = DEFAULT_MIN_SCORE,
    ) -> None:
        if beam_width < 1:
            raise ValueError("beam_width must be >= 1")
        if boost < 0:
            raise ValueError("boost must be >= 0")
        self.vocab = list(vocab)
        self.blank_id = blank_id
        self.delimiter_id = delimiter_id
        self.boost = float(boost)
        self.beam_width = beam_width
        self.min_score = float(min_score)
        self._alphabet = _alphabet(self.vocab, blank_id, delimiter_id)
        # Tokens that may be emitted: letters and the delimiter; never <s>, </s>, <unk>.
        emit = sorted(self._alphabet.values()) + [delimiter_id]
        self._emittable = np.zeros(len(self.vocab), dtype=bool)
        self._emittable[emit] = True
        # phrase text as given -> normalised words; duplicates after normalisation keep the first.
        self.phrases: list[tuple[str, list[str]]] = []
        seen: set[tuple[str, ...]] = set()
        for p in phrases:
            words = normalize_phrase(p, self._alphabet)
            if words and tuple(words) not in seen:
                seen.add(tuple(words))
                self.phrases.append((p, words))
        # Each phrase ends with a delimiter, so it only completes at a word end ("LIGHT" is not
        # credited inside "LIGHTNING"); a segment end counts as a word end too.
        sequences = [self._labels_of(words) + [delimiter_id] for _, words in self.phrases]
        # For find(): phrase texts, word counts, lengths and character counts (column 0: space).
        self._targets = [" ".join(words) for _, words in self.phrases]
        self._char_cols = {ch: j + 1 for j, ch in enumerate(sorted(self._alphabet))}
        self._char_cols[" "] = 0
        self._target_k = np.array([len(w) for _, w in self.phrases] or [0], dtype=np.int32)
        self._target_len = np.array([len(t) for t in self._targets], dtype=np.int32)
        self._target_counts = np.zeros((len(self._targets), len(self._char_cols)), dtype=np.int32)
        for i, t in enumerate(self._targets):
            for ch in t:
                self._target_counts[i, self._char_cols[ch]] += 1
        self._trie = _Trie(sequences if self.boost > 0 else [], self.boost, delimiter_id)

    def _labels_of(self, words: Sequence[str]) -> list[int]:
        labels: list[int] = []
        for i, w in enumerate(words):
            if i:
                labels.append(self.delimiter_id)
            labels.extend(self._alphabet[ch] for ch in w)
        return labels

    # ------------------------------------------------------------------ decoding

    def _candidates(self, log_probs: np.ndarray) -> list[list[tuple[int, float]] | None]:
        """Per frame: the emittable non-blank tokens worth extending with, or None for a frame
        where blank is all but certain."""
        lp = np.where(self._emittable[None, :], log_probs, NEG_INF)
        k = min(TOP_K, lp.shape[1])
        top = np.argpartition(-lp, k - 1, axis=1)[:, :k]
        top_lp = np.take_along_axis(lp, top, axis=1)
        keep = top_lp > MIN_TOKEN_LOG_PROB
        skip = log_probs[:, self.blank_id] > BLANK_SKIP_LOG_PROB
        out: list[list[tuple[int, float]] | None] = []
        for t in range(lp.shape[0]):
            if skip[t]:
                out.append(None)
            else:
                m = keep[t]
                out.append(list(zip(top[t][m].tolist(), top_lp[t][m].tolist())))
        return out

    def decode(self, log_probs: np.ndarray) -> list[int]:
        """Biased CTC prefix beam search: the best label sequence (token ids incl. delimiters,
        no blanks, repeats collapsed). Without phrases it is plain prefix beam search, which on
        clear-cut frames gives the greedy result."""
        log_probs = np.asarray(log_probs, dtype=np.float32)
        if log_probs.ndim != 2 or log_probs.shape[1] != len(self.vocab):
            raise ValueError(f"log_probs must be (T, {len(self.vocab)}), got {log_probs.shape}")
        if log_probs.shape[0] == 0:
            return []
        trie = self._trie
        delim = self.delimiter_id
        blank = self.blank_id
        beam_width = self.beam_width
        has_phrases = len(trie.children) > 1
        reserve = max(1, beam_width // 2)
        cands = self._candidates(log_probs)
        rows = log_probs.astype(np.float64).tolist()

        # Prefixes are interned as ids in a tree: parent, last label, trie node, committed bonus.
        p_parent = [-1]
        p_label = [-1]
        p_node = [0]
        p_committed = [0.0]
        p_bonus = [0.0]  # committed + pending of its trie node: what ranking adds to acoustics
        extend_cache: dict[tuple[int, int], int] = {}

        def extend(pid: int, c: int) -> int:
            key = (pid, c)
            nid = extend_cache.get(key)
            if nid is not None:
                return nid
            prev = p_label[pid]
            node = p_node[pid]
            committed = p_committed[pid]
            if not (c == delim and prev == delim):  # a doubled delimiter leaves the trie state
                node = trie.step(node, c, prev == -1 or prev == delim)
                committed += trie.gain[node]
            nid = len(p_parent)
            p_parent.append(pid)
            p_label.append(c)
            p_node.append(node)
            p_committed.append(committed)
            p_bonus.append(committed + trie.pending[node])
            extend_cache[key] = nid
            return nid

        # beam: prefix id -> [log P(prefix, ending in blank), log P(prefix, ending in non-blank)]
        beam: dict[int, list[float]] = {0: [0.0, NEG_INF]}
        for t, row in enumerate(rows):
            lp_blank = row[blank]
            frame_cands = cands[t]
            if frame_cands is None:
                # Blank-dominated frame: no prefix grows; mass moves to blank, or repeats the
                # prefix's last label.
                for pid, (pb, pnb) in beam.items():
                    total = _logaddexp(pb, pnb)
                    last = p_label[pid]
                    beam[pid] = [total + lp_blank, pnb + row[last] if last >= 0 else NEG_INF]
                continue
            nxt: dict[int, list[float]] = {}
            for pid, (pb, pnb) in beam.items():
                total = _logaddexp(pb, pnb)
                last = p_label[pid]
                entry = nxt.get(pid)
                if entry is None:
                    entry = nxt[pid] = [NEG_INF, NEG_INF]
                entry[0] = _logaddexp(entry[0], total + lp_blank)
                if last >= 0:  # the last label repeated without a blank collapses into it
                    entry[1] = _logaddexp(entry[1], pnb + row[last])
                for c, lp_c in frame_cands:
                    if c == last:
                        if pb == NEG_INF:
                            continue
                        score = pb + lp_c  # a repeated label needs a blank in between
                    else:
                        score = total + lp_c
                    nid = extend(pid, c)
                    e = nxt.get(nid)
                    if e is None:
                        nxt[nid] = [NEG_INF, score]
                    else:
                        e[1] = _logaddexp(e[1], score)
            if len(nxt) > beam_width:
                acoustic = {pid: _logaddexp(pb, pnb) for pid, (pb, pnb) in nxt.items()}
                keep = heapq.nlargest(beam_width, acoustic, key=lambda p: acoustic[p] + p_bonus[p])
                if has_phrases:
                    # Also keep the best prefixes ranked without pending bonus, so a long partial
                    # match cannot crowd the true continuation out of the beam; the final
                    # comparison (committed bonus only) then decides fairly.
                    keep = set(keep).union(
                        heapq.nlargest(
                            reserve, acoustic, key=lambda p: acoustic[p] + p_committed[p]
                        )
                    )
                beam = {pid: nxt[pid] for pid in keep}
            else:
                beam = nxt

        # Final ranking: committed bonus only -- a phrase left unfinished keeps no bonus.
        best = max(
            beam,
            key=lambda pid: _logaddexp(*beam[pid]) + p_committed[pid] + trie.end_gain[p_node[pid]],
        )
        labels: list[int] = []
        pid = best
        while pid > 0:
            labels.append(p_label[pid])
            pid = p_parent[pid]
        labels.reverse()
        return labels

    def text(self, labels: Sequence[int]) -> str:
        """Label ids -> upper-case words separated by single spaces."""
        return " ".join(
            "".join(self.vocab[i] for i in labels).replace(self.vocab[self.delimiter_id], " ").split()
        )

    # ------------------------------------------------------------------ spotting

    def find(self, words: Sequence[tuple[str, int, int, float]]) -> list[PhraseMatch]:
        """Phrases present in a decoded segment's ``words`` (word, start_frame, end_frame,
        confidence): fuzzy (character edit-distance similarity over word windows), non-overlapping,
        best first."""
        if not self.phrases or not words:
            return []
        tokens = [" ".join(normalize_phrase(w[0], self._alphabet)) for w in words]
        candidates = [
            (score, first, last, pi)
            for first, last, pi, window in self._plausible_windows(tokens)
            if (score := _match_score(window, self._targets[pi], self.min_score)) >= self.min_score
        ]
        # Best first; ties prefer the longer window, then the earlier one.
        candidates.sort(key=lambda c: (-c[0], -(c[2] - c[1]), c[1]))
        used = [False] * len(tokens)
        matches: list[PhraseMatch] = []
        for score, first, last, pi in candidates:
            if any(used[first : last + 1]):
                continue
            for j in range(first, last + 1):
                used[j] = True
            matches.append(
                PhraseMatch(self.phrases[pi][0], int(words[first][1]), int(words[last][2]), score)
            )
        return matches


    def _plausible_windows(self, tokens: list[str]) -> list[tuple[int, int, int, str]]:
        """(first word, last word, phrase index, window text) for every window of k-2..k+2 words
        (k = the phrase's word count) that can still reach ``min_score``: the length difference
        and the character-count difference both bound the edit distance from below, and numpy
        checks them for all windows and phrases at once (sessions may hold 1000 phrases)."""
        n = len(tokens)
        cols = self._char_cols
        counts = np.zeros((n + 1, len(cols) + 1), dtype=np.int32)  # cumulative; last col: length
        for i, tok in enumerate(tokens):
            for ch in tok:
                counts[i + 1, cols.get(ch, 0)] += 1
            counts[i + 1, -1] = len(tok)
        counts = np.cumsum(counts, axis=0)
        out: list[tuple[int, int, int, str]] = []
        for size in range(1, min(n, int(self._target_k.max()) + 2) + 1):
            phr = np.flatnonzero(np.abs(self._target_k - size) <= 2)
            if phr.size == 0:
                continue
            starts = np.arange(n - size + 1)
            win = counts[starts + size] - counts[starts]
            win[:, 0] += size - 1  # spaces between the window's words
            w_len = win[:, -1] + size - 1
            t_len = self._target_len[phr]
            longest = np.maximum(w_len[:, None], t_len[None, :])
            ok = np.abs(w_len[:, None] - t_len[None, :]) <= (1.0 - self.min_score) * longest
            wi, pj = np.nonzero(ok)
            if wi.size == 0:
                continue
            diff = win[wi, :-1] - self._target_counts[phr[pj]]
            bound = np.maximum(np.clip(diff, 0, None).sum(1), np.clip(-diff, 0, None).sum(1))
            keep = bound <= (1.0 - self.min_score) * longest[wi, pj]
            for i, p in zip(wi[keep].tolist(), phr[pj[keep]].tolist()):
                out.append((i, i + size - 1, p, " ".join(tokens[i : i + size])))
        return out


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


def forced_align(
    log_probs: np.ndarray, labels: Sequence[int], blank_id: int
) -> list[tuple[int, int, int, float]]:
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
    for t in range(1, T):
        stay = delta
        step = np.concatenate(([NEG_INF], delta[:-1]))
        skip = np.concatenate(([NEG_INF, NEG_INF], delta[:-2]))
        skip = np.where(can_skip, skip, NEG_INF)
        stacked = np.stack((stay, step, skip))
        choice = np.argmax(stacked, axis=0)
        back[t] = choice
        delta = stacked[choice, np.arange(S)] + emit[t]
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
