"""The LM bench's text: Debian text packages that share no source with tts-dev, and the checks that show it.

tts-dev's sentences were drawn from Debian's ``fortunes`` and WordNet glosses (``../shared/tools/tts_text.py``),
so LM text from either would flatter the result. Used instead:

* ``bible-kjv`` (the King James Bible, read with its ``bible`` program): 31,102 verses, ~820k words;
* ``python3.11-doc`` (the Python documentation's reStructuredText sources): prose paragraphs only, code,
  directives and markup removed.

``dict-gcide`` (Webster 1913 + additions) was the candidate closest to the glosses' register, and it was
checked and left out: it carries WordNet 1.5 definitions (thousands of entries say ``[WordNet 1.5]``), so
WordNet glosses occur in it verbatim; :func:`overlap` measures how many.

:func:`overlap` is the evidence: how many tts-dev references, and how many sentences of the whole
fortunes + WordNet pool they came from, occur anywhere in a text (as whole-word substrings).
"""

from __future__ import annotations

import glob
import gzip
import re
import shutil
import subprocess
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
RST_ROLE = re.compile(r":[a-z:]+:`([^`<]*)(?:<[^>]*>)?`")
RST_MARKUP = re.compile(r"``[^`]*``|`[^`]*`_*|\|[^|]*\||\[[^\]]*\]_|\*\*?|\.\. .*")
PY_DOCS = "/usr/share/doc/python3.11/html/_sources"
GCIDE = "/usr/share/dictd/gcide.dict.dz"


def words_of(text: str) -> str:
    """LibriSpeech-style: upper-case letter words with inner apostrophes, single spaces (as lm build)."""
    return " ".join(WORD.findall(text.replace("\u2019", "'").replace("-", " "))).upper()


def kjv_sentences() -> Iterator[str]:
    """The King James Bible, a verse per line, cut into sentences."""
    if shutil.which("bible") is None:
        raise SystemExit("the LM bench needs Debian's bible-kjv (apt-get install bible-kjv)")
    out = subprocess.run(["bible", "-l1000", "gen1:1-rev22:21"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s+\d+ (.*)", line)
        if m:
            yield from SENTENCE_END.split(m.group(1))


def python_doc_sentences() -> Iterator[str]:
    """Prose paragraphs of the Python docs' .rst sources: code blocks, tables, directives and markup dropped."""
    files = sorted(glob.glob(f"{PY_DOCS}/**/*.rst.txt", recursive=True))
    if not files:
        raise SystemExit("the LM bench needs Debian's python3.11-doc (apt-get install python3-doc)")
    for name in files:
        paragraph: list[str] = []
        for line in [*Path(name).read_text(encoding="utf-8", errors="replace").splitlines(), ""]:
            prose = line and not line[0].isspace() and not re.match(r"[=\-~^*#+|.>:]{2,}|\.\. ", line)
            if prose:
                paragraph.append(line)
                continue
            if paragraph:
                text = RST_MARKUP.sub(" ", RST_ROLE.sub(r"\1", " ".join(paragraph)))
                yield from SENTENCE_END.split(text)
            paragraph = []


def gcide_text() -> str:
    """dict-gcide's entries as plain text (for the overlap check only)."""
    return zlib.decompress(Path(GCIDE).read_bytes(), zlib.MAX_WBITS | 16).decode("utf-8", "replace")


def gcide_plain() -> str:
    """dict-gcide without its source tags ([1913 Webster], [WordNet 1.5]), markup braces and sense numbers."""
    return re.sub(r"\[[^\]]*\]|\{[^}]*\}|\d+\.", " ", gcide_text()).replace("\n", " ")


def corpus(sentences: Iterable[str], min_words: int = 3) -> list[str]:
    """Normalised sentences of at least ``min_words`` words, duplicates kept (they are counts to an LM)."""
    out = []
    for s in sentences:
        if re.search(r"[0-9@#$%&*_=+<>/\\{}\[\]~^()]", s):  # code and numbers: not speech-like prose
            continue
        n = words_of(s)
        if len(n.split()) >= min_words:
            out.append(n)
    return out


def overlap(text_sentences: Sequence[str], probes: Sequence[str]) -> dict[str, list[int]]:
    """Each probe (a normalised sentence of 3+ words) that occurs in the text as a run of whole words,
    with the indices of the text sentences holding it (probes are indexed by their first three words)."""
    first: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for p in set(probes):
        words = tuple(p.split())
        if len(words) >= 3:
            first.setdefault(words[:3], []).append(words)
    hits: dict[str, list[int]] = {}
    for n, sentence in enumerate(text_sentences):
        words = tuple(sentence.split())
        for i in range(len(words) - 2):
            for probe in first.get(words[i : i + 3], ()):
                if words[i : i + len(probe)] == probe:
                    hits.setdefault(" ".join(probe), []).append(n)
    return hits


def without(text_sentences: Sequence[str], hits: dict[str, list[int]]) -> list[str]:
    """The text less every sentence that holds a hit."""
    drop = {n for ns in hits.values() for n in ns}
    return [s for n, s in enumerate(text_sentences) if n not in drop]


def pool(tools: Path) -> list[str]:
    """Every sentence tts-dev could have been drawn from (fortunes + WordNet glosses, as tts_text.py makes
    them); empty when Debian's fortunes / wordnet-base are not installed."""
    if not glob.glob("/usr/share/wordnet/data.*"):
        return []
    out = subprocess.run(["python3", str(tools / "tts_text.py")], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


def wordnet_glosses(limit: int = 20000) -> list[str]:
    """Normalised WordNet gloss parts of 6+ words (long enough that a verbatim hit is not chance)."""
    out: list[str] = []
    for path in sorted(glob.glob("/usr/share/wordnet/data.*")):
        with open(path, encoding="latin-1") as fh:
            for line in fh:
                if line.startswith("  ") or "|" not in line:
                    continue
                for part in line.split("|", 1)[1].split(";"):
                    n = words_of(part.strip().strip('"'))
                    if len(n.split()) >= 6:
                        out.append(n)
    return out[:: max(1, len(out) // limit)][:limit]


def write_lines(lines: Iterable[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as fh:  # type: ignore[operator]
        for line in lines:
            fh.write(line + "\n")
    return path
