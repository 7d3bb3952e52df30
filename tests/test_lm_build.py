"""`streaming-asr lm build`: Debian's IRSTLM builds an ARPA LM that KenLM (and so --lm) reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming_asr.cli import main
from streaming_asr.config import ConfigError
from streaming_asr.decoding import lm_build

pytestmark = pytest.mark.skipif(not Path("/usr/lib/irstlm/bin/build-lm.sh").is_file(), reason="irstlm not installed")


def test_build_writes_an_arpa_kenlm_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import kenlm

    text = tmp_path / "a.txt"
    text.write_text("The cat sat on the mat.\nDon\u2019t stop, 42 times!\n\nthe dog sat on the log\n", encoding="utf-8")
    out = tmp_path / "lm.arpa"
    assert main(["lm", "build", str(text), "--order", "3", "--out", str(out)]) == 0
    assert "3-gram" in capsys.readouterr().out
    arpa = out.read_text()
    assert "\\3-grams:" in arpa and "\tDON'T\t" in arpa and "\tCAT\t" in arpa
    unigrams = arpa.split("\\1-grams:")[1].split("\\2-grams:")[0].split("\n")
    words = {line.split("\t")[1] for line in unigrams if line.count("\t") >= 1}
    assert words == {"<s>", "</s>", "<unk>", "THE", "CAT", "SAT", "ON", "MAT", "DON'T", "STOP", "TIMES", "DOG", "LOG"}
    model = kenlm.Model(str(out))
    assert model.order == 3
    assert model.score("THE CAT SAT ON THE MAT") > model.score("MAT THE ON SAT CAT THE")


def test_bad_input_is_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("123 456\n")
    cases = [
        ([str(empty), "--out", str(tmp_path / "x.arpa")], "no words"),
        ([str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x.arpa")], "cannot read"),
        ([str(empty), "--out", str(tmp_path / "no" / "x.arpa")], "does not exist"),
        ([str(empty), "--order", "9", "--out", str(tmp_path / "x.arpa")], "--order"),
    ]
    for args, message in cases:
        assert main(["lm", "build", *args]) == 2
        assert message in capsys.readouterr().err


def test_a_missing_irstlm_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lm_build, "IRSTLM_DIRS", ("/nonexistent",))
    monkeypatch.delenv("IRSTLM", raising=False)
    with pytest.raises(ConfigError, match="apt-get install irstlm"):
        lm_build.irstlm_bin()
