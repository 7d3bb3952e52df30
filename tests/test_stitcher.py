"""Windowing and stitching on hand-made frame labels: exact across seams, whatever the push sizes."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from labelmodel import INFO, label_audio, label_forward

from streaming_asr.config import StreamConfig
from streaming_asr.events import Final, Partial
from streaming_asr.session import StreamingSession

NO_ENDPOINT = dict(endpoint_silence_s=0.0, max_segment_s=600.0)


def stream(labels: str, push: int = 1600, **cfg: float) -> tuple[list[Final], list[Partial], list[np.ndarray]]:
    committed: list[tuple[int, np.ndarray]] = []
    session = StreamingSession(
        INFO, StreamConfig(**{**NO_ENDPOINT, **cfg}), on_commit=lambda f, lp: committed.append((f, lp))
    )
    audio = label_audio(labels)
    events = []
    for i in range(0, audio.size, push):
        session.push(audio[i : i + push])
        events += session.run(label_forward)
    session.finish()
    events += session.run(label_forward)
    frames = [lp for _, lp in sorted(committed, key=lambda x: x[0])]
    starts = [f for f, _ in committed]
    assert starts == sorted(starts)
    return ([e for e in events if isinstance(e, Final)], [e for e in events if isinstance(e, Partial)], frames)


def offline_frames(labels: str) -> np.ndarray:
    return label_forward([label_audio(labels)])[0]


def seam_labels(before: str, after: str, seam: int = 10) -> str:
    """Place `before` right before frame `seam` and `after` right from it."""
    return "_" * (seam - len(before)) + before + after + "_" * 12


GEOMETRY = dict(chunk_s=0.2, left_context_s=0.1, lookahead_s=0.04)  # 10-frame chunks


def test_letter_spanning_a_seam_is_not_doubled() -> None:
    finals, _, _ = stream(seam_labels("AA", "AA"), **GEOMETRY)
    assert finals[-1].text == "A"


def test_double_letter_at_a_seam_survives() -> None:
    assert stream(seam_labels("L", "_L"), **GEOMETRY)[0][-1].text == "LL"
    assert stream(seam_labels("L_", "L"), **GEOMETRY)[0][-1].text == "LL"


def test_word_boundary_at_a_seam() -> None:
    assert stream(seam_labels("HI", " YO"), **GEOMETRY)[0][-1].text == "HI YO"


def test_all_blank_windows_give_an_empty_final() -> None:
    finals, partials, _ = stream("_" * 80, **GEOMETRY)
    assert [f.text for f in finals] == [""]
    assert partials == []


def test_every_frame_committed_once_and_equal_to_offline() -> None:
    labels = "__HELLO_ _WORLD__ _A_BB_C" * 4
    _, _, frames = stream(labels, **GEOMETRY)
    np.testing.assert_array_equal(np.concatenate(frames), offline_frames(labels))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    labels=st.text(alphabet="AB_ ", min_size=1, max_size=120),
    chunk=st.integers(1, 30),
    left=st.integers(0, 40),
    ahead=st.integers(0, 10),
    push=st.sampled_from([1, 7, 320, 999, 1600, 48000]),
)
def test_streaming_equals_offline_frame_for_frame(labels: str, chunk: int, left: int, ahead: int, push: int) -> None:
    """Any geometry and push size: the stitched frame stream is the offline one, so the text is too."""
    finals, _, frames = stream(
        labels, push=push, chunk_s=chunk * 0.02, left_context_s=left * 0.02, lookahead_s=ahead * 0.02
    )
    expected = offline_frames(labels)
    got = np.concatenate(frames) if frames else np.zeros((0, 32))
    np.testing.assert_array_equal(got, expected)
    offline = stream(labels, push=10**9, chunk_s=10.0, left_context_s=0.0, lookahead_s=0.0)[0]
    assert " ".join(f.text for f in finals if f.text) == " ".join(f.text for f in offline if f.text)


def test_partials_grow_and_stable_prefix_holds() -> None:
    labels = "_H_E_L_L_O_ _W_O_R_L_D_ _A_G_A_I_N_" * 3
    finals, partials, _ = stream(labels, push=320, **GEOMETRY)
    assert partials, "expected interim results"
    for p in partials:
        assert p.stable <= len(p.text)
    final_text = finals[-1].text
    for p in partials:
        assert final_text.startswith(p.text[: p.stable])


def test_silence_endpoint_splits_segments_and_times_are_absolute() -> None:
    labels = "__HI_THERE" + "_" * 60 + "YES_NO" + "_" * 5
    finals, _, _ = stream(
        labels, chunk_s=0.2, left_context_s=0.2, lookahead_s=0.04, endpoint_silence_s=0.5, max_segment_s=60
    )
    assert [(f.text, f.reason) for f in finals] == [("HITHERE", "silence"), ("YESNO", "stop")]
    assert [f.segment for f in finals] == [0, 1]
    assert finals[1].start == 70 * 0.02
    assert finals[0].words[0].start == 2 * 0.02


def test_endpoint_inside_one_big_window_still_splits() -> None:
    labels = "AB" + "_" * 40 + "CD" + "_" * 5
    finals, _, _ = stream(
        labels, chunk_s=5.0, left_context_s=0.0, lookahead_s=0.0, endpoint_silence_s=0.3, max_segment_s=60
    )
    assert [f.text for f in finals] == ["AB", "CD"]


def test_max_segment_cuts_at_a_word_boundary_and_loses_nothing() -> None:
    words = ["AB", "BA", "AAB", "B", "ABBA"] * 6
    labels = "_".join(" ".join(words))  # letters separated by blanks so nothing collapses
    finals, _, _ = stream(
        labels, chunk_s=0.2, left_context_s=0.2, lookahead_s=0.0, endpoint_silence_s=0.0, max_segment_s=1.0
    )
    assert len(finals) > 2
    assert all(f.reason == "max_length" for f in finals[:-1])
    assert " ".join(f.text for f in finals).split() == words


def test_finalize_mid_stream_then_continue() -> None:
    session = StreamingSession(INFO, StreamConfig(chunk_s=0.2, left_context_s=0.2, lookahead_s=0.04, **NO_ENDPOINT))
    audio = label_audio("_AB_" * 5 + "___" + "BA_" * 4)
    cut = 20 * 320 + 80  # frames 0..19 complete
    session.push(audio[:cut])
    session.run(label_forward)
    session.finalize()
    first = [e for e in session.run(label_forward) if isinstance(e, Final)]
    assert [(f.text, f.reason, f.segment) for f in first] == [("ABABABABAB", "finalize", 0)]
    session.push(audio[cut:])
    session.finish()
    rest = [e for e in session.run(label_forward) if isinstance(e, Final)]
    assert [(f.segment, f.reason, f.text) for f in rest] == [(1, "stop", "BABABABA")]


def test_finalize_with_no_audio_gives_empty_final() -> None:
    session = StreamingSession(INFO)
    session.finalize()
    assert [(type(e).__name__, e.text, e.reason) for e in session.pop_events()] == [("Final", "", "finalize")]


def test_memory_is_bounded_on_a_long_stream() -> None:
    cfg = StreamConfig(chunk_s=0.5, left_context_s=1.0, lookahead_s=0.2, endpoint_silence_s=0.5)
    session = StreamingSession(INFO, cfg)
    piece = label_audio("_AB_ _BA_" * 50)[: 16000 * 2]
    peak = 0
    for _ in range(150):  # 5 minutes
        session.push(piece)
        session.run(label_forward)
        peak = max(peak, session.buffered_samples, len(session._seg.decoder.tokens))
    window = (1.0 + 0.5 + 0.2) * 16000
    assert peak < window + 2 * piece.size


def test_finalize_cuts_where_the_stream_is_even_if_more_audio_and_stop_follow_at_once() -> None:
    """finalize, more audio and stop arrive before any window ran: two finals, split at the finalize."""
    session = StreamingSession(INFO, StreamConfig(chunk_s=0.2, left_context_s=0.2, lookahead_s=0.1, **NO_ENDPOINT))
    audio = label_audio("_AB_" * 5 + "___" + "BA_" * 4)
    cut = 20 * 320 + 80
    session.push(audio[:cut])
    session.finalize()
    session.push(audio[cut:])
    session.finish()
    finals = [e for e in session.run(label_forward) if isinstance(e, Final)]
    assert [(f.segment, f.reason, f.text) for f in finals] == [(0, "finalize", "ABABABABAB"), (1, "stop", "BABABABA")]
    assert finals[1].start >= finals[0].end
