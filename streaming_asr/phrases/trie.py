"""The phrase trie: normalised phrases as label sequences with boosts and failure links (Aho-Corasick style)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..ctc import printable

NEG_INF = float("-inf")
#: Characters that separate words in a phrase (besides whitespace).
SEPARATORS = "-_/|"

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


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for Python floats (faster than numpy on scalars)."""
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def _alphabet(vocab: Sequence[str], blank_id: int, delimiter_id: int) -> dict[str, int]:
    """Text tokens -> id: letters and apostrophe (wav2vec2), and tokens of several characters in any
    script; specials like ``<unk>`` / ``[UNK]``, whitespace, the blank and the delimiter excluded."""
    return {
        tok: i
        for i, tok in enumerate(vocab)
        if tok and not tok.isspace() and printable(tok) and i not in (blank_id, delimiter_id)
    }


def normalize_phrase(phrase: str, alphabet: dict[str, int]) -> list[str]:
    """Split ``phrase`` into words of vocabulary tokens, in the vocabulary's case (upper case for
    wav2vec2, lower case for many multilingual checkpoints).

    Whitespace, ``-``, ``_``, ``/`` and ``|`` separate words. Within a word the longest token that
    matches (upper case tried first, then lower case, then as written) is taken, so vocabularies
    whose tokens are several characters long work too; a character no token starts with (digits,
    punctuation) is dropped, so "Set a timer, 10 min" -> ["SET", "A", "TIMER", "MIN"].
    """
    longest = max(map(len, alphabet), default=1)
    words: list[str] = []
    current: list[str] = []
    i, n = 0, len(phrase)
    while i < n:
        ch = phrase[i]
        if ch.isspace() or ch in SEPARATORS:
            if current:
                words.append("".join(current))
                current = []
            i += 1
            continue
        for size in range(min(longest, n - i), 0, -1):
            piece = phrase[i : i + size]
            token = next((t for t in (piece.upper(), piece.lower(), piece) if t in alphabet), None)
            if token is not None:
                current.append(token)
                i += size
                break
        else:
            i += 1  # no token starts with this character: dropped
    if current:
        words.append("".join(current))
    return words


def tokenize_word(word: str, alphabet: dict[str, int]) -> list[int]:
    """A normalised word as the fewest vocabulary tokens that spell it (one per character for
    wav2vec2's letters); a character no segmentation covers is skipped."""
    longest = max(map(len, alphabet), default=1)
    n = len(word)
    skip = n + 1  # a skipped character costs more than any number of tokens
    cost = [0] + [skip * (n + 1)] * n  # cost[j]: best cost of word[:j]
    back = [0] * (n + 1)  # start of the last piece of word[:j]; negative: -(start + 1) of a skipped character
    for j in range(1, n + 1):
        cost[j], back[j] = cost[j - 1] + skip, -j
        for size in range(1, min(longest, j) + 1):
            if cost[j - size] + 1 < cost[j] and word[j - size : j] in alphabet:
                cost[j], back[j] = cost[j - size] + 1, j - size
    labels: list[int] = []
    j = n
    while j > 0:
        start = back[j]
        if start < 0:
            j = -start - 1
            continue
        labels.append(alphabet[word[start:j]])
        j = start
    labels.reverse()
    return labels


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
        label: list[int] = [-1]  # the label on the edge into each node
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
                    label.append(c)
                node = nxt
            self.terminal[node] = True
        n = len(self.children)
        # Failure link: the longest proper suffix of the node's label sequence that starts right
        # after a delimiter (a word start) and is itself a trie node; root if none. Built
        # Aho-Corasick style, shallow nodes first, in time linear in the trie size: the word-start
        # suffixes of a node's labels that are trie nodes are its parent's chain of failure links
        # (fail[p], fail[fail[p]], ...) each extended by the node's label, then -- if the parent
        # ends in a delimiter -- the node's label alone.
        self.fail = [0] * n
        children = self.children
        for i in sorted(range(1, n), key=self.depth.__getitem__):
            p = self.parent[i]
            if p == 0:
                continue
            c = label[i]
            q = self.fail[p]
            f = 0
            while q != 0:
                f = children[q].get(c, 0)
                if f:
                    break
                q = self.fail[q]
            if not f and label[p] == delimiter_id:
                f = children[0].get(c, 0)
            self.fail[i] = f
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
