"""`streaming-asr lm build`: a small n-gram LM in ARPA from text files, with Debian's IRSTLM.

IRSTLM is a maintained LM toolkit that Debian ships (`apt install irstlm`): `build-lm.sh` estimates
the model (Witten-Bell smoothing here, which suits small corpora) in IRSTLM's iARPA format and
`compile-lm --text=yes` writes standard ARPA, which the `kenlm` module (and so `--lm`) reads. We only
normalise the text to what a CTC vocabulary can spell and run the two tools.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..config import ConfigError

IRSTLM_DIRS = ("/usr/lib/irstlm/bin", "/usr/bin")
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")  # letters, with inner apostrophes (DON'T, O'CLOCK)
MISSING = (
    "IRSTLM is not installed: `lm build` needs its build-lm.sh and compile-lm "
    "(Debian/Ubuntu: sudo apt-get install irstlm)"
)


def irstlm_bin() -> Path:
    """The folder holding build-lm.sh and compile-lm; ConfigError saying which package is missing."""
    for folder in (os.environ.get("IRSTLM", "") + "/bin", *IRSTLM_DIRS):
        if folder and Path(folder, "build-lm.sh").is_file() and Path(folder, "compile-lm").is_file():
            return Path(folder)
    raise ConfigError(MISSING)


def normalise(lines: Iterable[str], case: str = "upper") -> Iterable[str]:
    """One sentence per non-empty line, as words a CTC vocabulary spells (digits and punctuation dropped)."""
    for line in lines:
        words = WORD.findall(line.replace("\u2019", "'"))
        if words:
            text = " ".join(words)
            yield text.upper() if case == "upper" else text.lower() if case == "lower" else text


def build_arpa(texts: Sequence[str], out: str, order: int = 3, case: str = "upper") -> int:
    """Write an ARPA LM of `order` from the text files to `out`; returns the number of sentences."""
    if not 1 <= order <= 6:
        raise ConfigError(f"--order must be 1 to 6, got {order}")
    tools = irstlm_bin()
    target = Path(out).expanduser()
    if not target.parent.is_dir():
        raise ConfigError(f"cannot write {out}: folder {target.parent} does not exist")
    with tempfile.TemporaryDirectory(prefix="lm-build-") as tmp:
        corpus = Path(tmp, "corpus.txt")
        sentences = 0
        with corpus.open("w", encoding="utf-8") as fh:
            for name in texts:
                try:
                    with open(name, encoding="utf-8", errors="replace") as src:
                        for sentence in normalise(src, case):
                            fh.write(f"<s> {sentence} </s>\n")
                            sentences += 1
                except OSError as exc:
                    raise ConfigError(f"cannot read {name}: {exc.strerror or exc}") from None
        if not sentences:
            raise ConfigError("the text files hold no words to build a language model from")
        env = {**os.environ, "IRSTLM": str(tools.parent), "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"}
        ilm = Path(tmp, "lm.ilm.gz")
        _run(
            [
                str(tools / "build-lm.sh"),
                "-i",
                str(corpus),
                "-n",
                str(order),
                "-o",
                str(ilm),
                "-k",
                "1",
                "-s",
                "witten-bell",
                "-t",
                str(Path(tmp, "work")),
            ],
            env,
        )
        _run([str(tools / "compile-lm"), str(ilm), "--text=yes", str(target)], env)
    return sentences


def _run(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or (cmd[0].endswith("build-lm.sh") and "rror" in proc.stderr):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}): {' | '.join(tail)}")
