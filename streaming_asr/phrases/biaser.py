"""Phrase-biased CTC prefix beam search (the `decode` half of PhraseBiaser; `find` comes from matching.py)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from .matching import PhraseFinder
from .trie import (
    BLANK_SKIP_LOG_PROB,
    DEFAULT_BOOST,
    DEFAULT_MIN_SCORE,
    MIN_TOKEN_LOG_PROB,
    NEG_INF,
    TOP_K,
    _alphabet,
    _logaddexp,
    _Trie,
    normalize_phrase,
    tokenize_word,
)


class WordScorer(Protocol):
    """Word-level scores (an n-gram LM, decoding/lm.py) that :meth:`PhraseBiaser.decode` adds to a
    prefix each time it completes a word, in nats, already weighted; ``state`` is opaque here."""

    def start(self) -> Any: ...

    def word(self, state: Any, word: str) -> tuple[float, Any]: ...

    def partial(self, prefix: str) -> float:
        """A ranking penalty (<= 0) for a word in progress: 0 while it can still become a known word."""
        ...

    def end(self, state: Any) -> float: ...


class PhraseBiaser(PhraseFinder):
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
        self._char_cols = {ch: j + 1 for j, ch in enumerate(sorted(set("".join(self._alphabet))))}
        self._char_cols[" "] = 0
        self._target_k = np.array([len(w) for _, w in self.phrases] or [0], dtype=np.int32)
        self._target_len = np.array([len(t) for t in self._targets], dtype=np.int32)
        # Per phrase character: phrase index, position, column (vectorised, for up to 20000).
        flat_cols = np.array([self._char_cols[ch] for t in self._targets for ch in t], dtype=np.int64)
        owner = np.repeat(np.arange(len(self._targets)), self._target_len)
        starts = np.cumsum(self._target_len) - self._target_len
        pos = np.arange(flat_cols.size) - np.repeat(starts, self._target_len)
        self._target_counts = np.zeros((len(self._targets), len(self._char_cols)), dtype=np.int32)
        np.add.at(self._target_counts, (owner, flat_cols), 1)
        # For find()'s bit-parallel edit distance: per phrase and character column, the bit mask
        # of the positions holding that character, in 64-bit words (an extra last column for
        # characters outside the alphabet: no bits), and the length of the phrase's shortest word
        # over 3 letters (for the MIN_WORD_MATCH check).
        n_words = max(1, (int(self._target_len.max(initial=0)) + 63) // 64)
        self._peq = np.zeros((len(self._targets), len(self._char_cols) + 1, n_words), dtype=np.uint64)
        bit = np.left_shift(np.uint64(1), (pos % 64).astype(np.uint64))
        np.add.at(self._peq, (owner, flat_cols, pos // 64), bit)  # distinct bits: + is |
        self._target_min_long = np.array(
            [min((len(w) for w in words if len(w) > 3), default=np.inf) for _, words in self.phrases] or [np.inf],
            dtype=np.float64,
        )
        self._trie = _Trie(sequences if self.boost > 0 else [], self.boost, delimiter_id)

    def _labels_of(self, words: Sequence[str]) -> list[int]:
        labels: list[int] = []
        for i, w in enumerate(words):
            if i:
                labels.append(self.delimiter_id)
            labels.extend(tokenize_word(w, self._alphabet))
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

    def decode(self, log_probs: np.ndarray, words: WordScorer | None = None) -> list[int]:
        """Biased CTC prefix beam search: the best label sequence (token ids incl. delimiters,
        no blanks, repeats collapsed). Without phrases it is plain prefix beam search, which on
        clear-cut frames gives the greedy result. ``words`` adds an LM's score at each word end
        (and the trailing word's at the segment end), so phrases and the LM rank in one search."""
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
        # with `words`: the letters of the word in progress, and the LM state after the words before it
        p_word = [""]
        p_state: list[Any] = [words.start() if words else None]
        p_open = [0.0]  # the word in progress's partial penalty (ranking only, like trie.pending)
        vocab = self.vocab
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
            word, state, open_ = p_word[pid], p_state[pid], 0.0
            if words is not None:
                if c != delim:
                    word += vocab[c]
                    open_ = words.partial(word)
                elif word:  # a word completed: its LM score joins the committed part of the ranking
                    gain, state = words.word(state, word)
                    committed += gain
                    word = ""
            p_word.append(word)
            p_state.append(state)
            p_open.append(open_)
            nid = len(p_parent)
            p_parent.append(pid)
            p_label.append(c)
            p_node.append(node)
            p_committed.append(committed)
            p_bonus.append(committed + trie.pending[node] + open_)
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
                    keep = list(
                        set(keep).union(
                            heapq.nlargest(reserve, acoustic, key=lambda p: acoustic[p] + p_committed[p] + p_open[p])
                        )
                    )
                beam = {pid: nxt[pid] for pid in keep}
            else:
                beam = nxt

        def closing(pid: int) -> float:  # the trailing word's and the sentence end's LM score
            if words is None:
                return 0.0
            gain, state = words.word(p_state[pid], p_word[pid]) if p_word[pid] else (0.0, p_state[pid])
            return gain + words.end(state)

        # Final ranking: committed bonus only -- a phrase left unfinished keeps no bonus.
        best = max(
            beam,
            key=lambda pid: _logaddexp(*beam[pid]) + p_committed[pid] + trie.end_gain[p_node[pid]] + closing(pid),
        )
        labels: list[int] = []
        pid = best
        while pid > 0:
            labels.append(p_label[pid])
            pid = p_parent[pid]
        labels.reverse()
        return labels

    def text(self, labels: Sequence[int]) -> str:
        """Label ids -> words (in the vocabulary's case) separated by single spaces."""
        return " ".join("".join(self.vocab[i] for i in labels).replace(self.vocab[self.delimiter_id], " ").split())

    # ------------------------------------------------------------------ spotting
