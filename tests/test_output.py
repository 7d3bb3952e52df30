"""Transcript writers: text lines, JSON lines and WebVTT, and the timeline shift used on reconnect."""

from __future__ import annotations

import io
import json
import re

import pytest

from clients.asr_client import Final, Partial, PhraseMatch, Word
from clients.output import (
    JsonLinesWriter,
    TextWriter,
    VttWriter,
    final_line,
    format_clock,
    format_vtt_time,
    infer_format,
    make_writer,
    open_writer,
    shift_final,
)

FINAL = Final(
    segment=2,
    text="TURN ON THE LIGHTS",
    start=1.2,
    end=3.4,
    reason="silence",
    words=(Word("TURN", 1.2, 1.5, 0.9), Word("LIGHTS", 3.0, 3.4, 0.8)),
    phrases=(PhraseMatch("turn on the lights", 1.2, 3.4, 0.93),),
)
EMPTY = Final(3, "", 5.0, 5.0, "stop")

VTT_CUE_TIMING = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$")


def vtt_seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """A strict-enough WebVTT reader: header, blank-line separated cues, ordered timings."""
    assert text.startswith("WEBVTT\n\n")
    cues = []
    for block in text[len("WEBVTT\n\n") :].strip("\n").split("\n\n"):
        lines = block.split("\n")
        timing_line = lines[1] if not VTT_CUE_TIMING.match(lines[0]) else lines[0]
        m = VTT_CUE_TIMING.match(timing_line)
        assert m, f"bad cue timing: {timing_line!r}"
        start, end = vtt_seconds(*m.groups()[:4]), vtt_seconds(*m.groups()[4:])
        assert end > start
        body = lines[lines.index(timing_line) + 1 :]
        assert body and all(line and "-->" not in line for line in body)
        cues.append((start, end, "\n".join(body)))
    return cues


def test_clock_formats() -> None:
    assert format_clock(1.2) == "00:01.20"
    assert format_clock(75.456) == "01:15.46"
    assert format_clock(3723.5) == "1:02:03.50"
    assert format_vtt_time(3723.5) == "01:02:03.500"
    assert format_vtt_time(0.0) == "00:00:00.000"
    assert format_vtt_time(59.9996) == "00:01:00.000"


def test_text_writer_lines_and_skips_empty_finals() -> None:
    out = io.StringIO()
    writer = TextWriter(out)
    writer.write_partial(Partial(2, "TURN ON", 4))
    writer.write_final(FINAL)
    writer.write_final(EMPTY)
    assert out.getvalue() == "[00:01.20-00:03.40] TURN ON THE LIGHTS\n"
    assert final_line(FINAL) == "[00:01.20-00:03.40] TURN ON THE LIGHTS"


def test_json_lines_keep_every_final_with_words_and_phrases() -> None:
    out = io.StringIO()
    writer = JsonLinesWriter(out, partials=True)
    writer.write_partial(Partial(2, "TURN ON", 4, 1.92))
    writer.write_final(FINAL, file="a.wav")
    writer.write_final(EMPTY)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["type"] for r in rows] == ["partial", "final", "final"]
    assert rows[0] == {"type": "partial", "segment": 2, "text": "TURN ON", "stable": 4, "end": 1.92}
    assert rows[1]["words"][1] == {"word": "LIGHTS", "start": 3.0, "end": 3.4, "confidence": 0.8}
    assert rows[1]["phrases"][0]["phrase"] == "turn on the lights"
    assert rows[1]["file"] == "a.wav" and rows[1]["reason"] == "silence"
    assert rows[2]["text"] == "" and rows[2]["words"] == []


def test_json_lines_without_partials_flag_drop_partials() -> None:
    out = io.StringIO()
    JsonLinesWriter(out).write_partial(Partial(0, "X", 0))
    assert out.getvalue() == ""


def test_vtt_is_valid_and_escapes_markup() -> None:
    out = io.StringIO()
    writer = VttWriter(out)
    writer.write_final(FINAL)
    writer.write_final(EMPTY)  # no cue for empty text
    writer.write_final(Final(4, "A <B> & C", 3723.5, 3723.5, "finalize"))  # zero-length: stretched
    cues = parse_vtt(out.getvalue())
    assert cues[0] == (1.2, 3.4, "TURN ON THE LIGHTS")
    assert cues[1][0] == 3723.5 and cues[1][1] > cues[1][0]
    assert cues[1][2] == "A &lt;B&gt; &amp; C"
    assert out.getvalue().split("\n\n")[1].startswith("1\n00:00:01.200 --> 00:00:03.400")


def test_shift_final_moves_segment_times_words_and_phrases() -> None:
    shifted = shift_final(FINAL, 10, 100.0)
    assert shifted.segment == 12
    assert (shifted.start, shifted.end) == (101.2, 103.4)
    assert shifted.words[1].start == pytest.approx(103.0) and shifted.words[1].word == "LIGHTS"
    assert shifted.phrases[0].end == pytest.approx(103.4)
    assert shift_final(FINAL, 0, 0.0) is FINAL


def test_format_inference_and_open_writer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert infer_format("a.vtt") == "vtt"
    assert infer_format("a.JSONL") == "jsonl"
    assert infer_format("a.txt") == "text"
    path = tmp_path / "captions.vtt"
    writer = open_writer(path)
    writer.write_final(FINAL)
    writer.close()
    assert parse_vtt(path.read_text())[0][2] == "TURN ON THE LIGHTS"
    with pytest.raises(ValueError):
        make_writer(io.StringIO(), "srt")  # type: ignore[arg-type]
