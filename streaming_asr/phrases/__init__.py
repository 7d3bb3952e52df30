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

from .align import aligned_words, forced_align
from .biaser import PhraseBiaser
from .matching import FIND_CHECK_CELLS, FIND_SCAN_STEPS, MIN_WORD_MATCH, PhraseMatch, _match_score
from .trie import DEFAULT_BOOST, DEFAULT_MIN_SCORE, normalize_phrase

__all__ = [
    "PhraseMatch",
    "PhraseBiaser",
    "forced_align",
    "aligned_words",
    "normalize_phrase",
    "DEFAULT_BOOST",
    "DEFAULT_MIN_SCORE",
    "FIND_CHECK_CELLS",
    "FIND_SCAN_STEPS",
    "MIN_WORD_MATCH",
    "_match_score",
]
