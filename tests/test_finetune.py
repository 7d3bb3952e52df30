"""`streaming-asr finetune`: manifests checked with line numbers, references normalised to the vocabulary,
checkpoints that load where `--model` does, resume, Ctrl-C, and learning that actually happens.

Tiny random checkpoints are built here; the learning test fine-tunes the stand-in on a few slt utterances.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from familymodels import save_checkpoint
from helpers import REPO, STANDIN_MODEL, TTS_DEV, tts_dev_rows
from safetensors.numpy import load_file

from streaming_asr.audio import read_audio
from streaming_asr.cli import main
from streaming_asr.config import ConfigError
from streaming_asr.model import CtcModel, cpu_has_native_bf16, default_vocab
from streaming_asr.offline import transcribe_offline
from streaming_asr.training import FinetuneSettings, finetune
from streaming_asr.training.amp import resolve_training_precision
from streaming_asr.training.batches import plan_batches
from streaming_asr.training.schedule import FLOOR, Schedule
from streaming_asr.training.text import TextNormaliser, vocabulary_case

HEADER = "id\treference\tvoice\twav"  # columns found by name: not the tts-dev order, and extra ones
ROWS = sorted(tts_dev_rows(), key=lambda r: r["duration_s"])[:3]  # the three shortest utterances
LOWER = ["<pad>", "<s>", "</s>", "<unk>", "▁", *"abcdefghijklmnopqrstuvwxyz'", "th", "sch"]


# ------------------------------------------------------------------ helpers
def manifest(path: Path, rows: Sequence[tuple[str, str]], header: str = HEADER) -> Path:
    """A manifest with `(wav, reference)` rows under `header` (its other columns get filler)."""
    names = header.split("\t")
    lines = [header]
    for n, (wav, ref) in enumerate(rows):
        cell = {"wav": wav, "reference": ref, "id": f"row{n}", "voice": "test"}
        lines.append("\t".join(cell.get(name, "") for name in names))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def relative_manifest(folder: Path, name: str = "train.tsv") -> Path:
    """The short rows with paths relative to the manifest's folder (tts-dev's wav/ linked in)."""
    link = folder / "audio"
    folder.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(TTS_DEV / "wav", target_is_directory=True)
    return manifest(folder / name, [(f"audio/{r['wav'].name}", r["reference"]) for r in ROWS])


def absolute_manifest(path: Path) -> Path:
    return manifest(path, [(str(r["wav"]), r["reference"]) for r in ROWS])


def finetune_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["finetune", "--threads", "1", "--no-progress", *args])
    out, err = capsys.readouterr()
    return code, out, err


def wav(path: Path, seconds: float) -> str:
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, int(16000 * seconds)).astype(np.float32), 16000)
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random wav2vec2 with base-960h's vocabulary and group-norm CNN (no attention mask)."""
    return save_checkpoint("wav2vec2", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def lower_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random layer-norm wav2vec2 (attention masks) with a lower-case vocabulary, "▁" between words
    and multi-character tokens."""
    import torch
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor

    from streaming_asr.model import tiny_config

    folder = tmp_path_factory.mktemp("lower")
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(LOWER)}), encoding="utf-8")
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), word_delimiter_token="▁")
    Wav2Vec2Processor(extractor, tokenizer).save_pretrained(folder)
    torch.manual_seed(5)
    config = tiny_config(vocab_size=len(LOWER), feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)
    model = Wav2Vec2ForCTC(config).eval()  # type: ignore[no-untyped-call]
    audio = read_audio(ROWS[0]["wav"], 16000)[0]
    with torch.no_grad():  # a head that turns the frames' small differences into varied tokens, words included
        hidden = model.wav2vec2(torch.from_numpy((audio - audio.mean()) / audio.std())[None])[0][0]
        weight = torch.randn(len(LOWER), hidden.shape[-1]) * 3.0 / (hidden - hidden.mean(0)).std()
        bias = -(hidden @ weight.T).mean(0)
        i = LOWER.index("▁")
        others = torch.cat([weight[:i], weight[i + 1 :]]) @ hidden.T + torch.cat([bias[:i], bias[i + 1 :]])[:, None]
        bias[i] = torch.quantile(others.max(0).values - hidden @ weight[i], 0.2)  # "▁" wins a fifth of the frames
        model.lm_head.weight.copy_(weight)
        model.lm_head.bias.copy_(bias)
    model.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------ text normalisation
def test_upper_case_vocabulary_romanises_removes_punctuation_and_splits_hyphens() -> None:
    vocab = default_vocab(32)
    norm = TextNormaliser(vocab, 0, vocab.index("|"))
    assert norm.case == "upper"
    out = norm.normalise("Don’t stop—it's e-mail_ready, café!\u200b ")
    assert out.text == "DON'T STOP IT'S E MAIL READY CAFE"
    assert out.removed == Counter({",": 1, "!": 1, "\u200b": 1})
    assert out.romanised == Counter({"É": 1}) and not out.unknown
    words = [[vocab.index(c) for c in w] for w in out.text.split()]
    assert list(out.labels) == [t for n, w in enumerate(words) for t in ([4] if n else []) + w]
    unknown = norm.normalise("Room 101, ÆON 中")
    assert unknown.unknown == Counter({"1": 2, "0": 1, "Æ": 1, "中": 1}) and unknown.text == "ROOM ON"
    assert norm.normalise("Straße").text == "STRASSE"


def test_lower_case_vocabulary_takes_the_longest_token() -> None:
    norm = TextNormaliser(LOWER, 0, LOWER.index("▁"))
    assert norm.case == "lower" and vocabulary_case(["A", "b"]) == "keep"
    out = norm.normalise("The SCHOOL  bus")
    tokens = [LOWER[i] for i in out.labels]
    assert tokens == ["th", "e", "▁", "sch", "o", "o", "l", "▁", "b", "u", "s"]
    assert out.text == "the school bus"


# ------------------------------------------------------------------ pure parts of the loop
def test_batches_stay_within_the_budget_and_cover_every_utterance_once() -> None:
    lengths = np.random.default_rng(1).integers(8000, 160000, 200).tolist()
    budget = 480000
    plan = plan_batches(lengths, budget, seed=3, epoch=0)
    assert sorted(i for b in plan for i in b) == list(range(200))
    assert all(len(b) == 1 or max(lengths[i] for i in b) * len(b) <= budget for b in plan)
    assert plan == plan_batches(lengths, budget, seed=3, epoch=0)  # a resumed run rebuilds the same epoch
    assert plan != plan_batches(lengths, budget, seed=3, epoch=1)
    assert [len(b) for b in plan_batches([10, 500, 20], 100, 0, 0)].count(1) >= 1  # too long: on its own


def test_schedule_warms_up_then_decays_to_the_floor_by_steps_or_by_time() -> None:
    s = Schedule(1e-3, warmup_steps=10, max_steps=100)
    assert s.rate(0) == pytest.approx(1e-4) and s.rate(9) == pytest.approx(1e-3)
    assert s.rate(99) < s.rate(50) < s.rate(10) and s.rate(100) == pytest.approx(1e-3 * FLOOR)
    timed = Schedule(1e-3, warmup_steps=0, max_steps=None, shape="cosine")
    assert timed.rate(5, 0.0) == pytest.approx(1e-3) and timed.rate(5, 1.0) == pytest.approx(1e-3 * FLOOR)


def test_precision_auto_follows_the_cpu() -> None:
    assert resolve_training_precision("auto", "cpu", frozenset()) == "fp32"
    assert resolve_training_precision("auto", "cpu", frozenset({"avx512_bf16", "amx_bf16", "bf16"})) == "bf16"
    assert resolve_training_precision("bf16", "cpu", frozenset()) == "bf16"
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_training_precision("fp16", "cpu")


# ------------------------------------------------------------------ whole runs
def test_a_run_writes_best_last_and_history_that_load(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    train, evalset = relative_manifest(tmp_path / "data"), absolute_manifest(tmp_path / "eval.tsv")
    code, stdout, _ = finetune_cli(
        capsys, "--train", str(train), "--eval", str(evalset), "--model", str(tiny), "--out", str(out),
        "--max-steps", "3", "--eval-every", "2",
    )  # fmt: skip
    assert code == 0
    history = json.loads((out / "history.json").read_text())
    assert [e["step"] for e in history["evals"]] == [2, 3]
    assert set(history["evals"][0]) == {"step", "seconds", "audio_seconds_seen", "wer", "cer", "train_loss"}
    assert history["evals"][1]["audio_seconds_seen"] > history["evals"][0]["audio_seconds_seen"] > 0
    assert history["settings"]["max_steps"] == 3 and history["best"]["step"] in (2, 3)
    run = history["runs"][0]
    assert run["attention_mask"] is False  # group norm: zero padding, no mask
    assert run["precision"] == ("bf16" if cpu_has_native_bf16() else "fp32")  # auto; this dev machine: fp32
    assert f"at step {history['best']['step']}: {out / 'best'}" in stdout
    for folder in ("best", "last"):
        model = CtcModel.load(str(out / folder), device="cpu")
        assert model.info.vocab == default_vocab(32) and model.info.delimiter_id == 4
    assert json.loads((out / "last" / "trainer_state.json").read_text())["step"] == 3
    before, after = load_file(str(tiny / "model.safetensors")), load_file(str(out / "best" / "model.safetensors"))
    frozen = [k for k in before if ".feature_extractor." in k]
    assert frozen and all(np.array_equal(before[k], after[k]) for k in frozen)
    for key in ("lm_head.weight", "wav2vec2.encoder.layers.0.attention.q_proj.weight"):
        assert not np.array_equal(before[key], after[key])
    command = [sys.executable, "-m", "streaming_asr", "transcribe", "--model", str(out / "best"), "--threads", "1"]
    proc = subprocess.run([*command, str(ROWS[0]["wav"])], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_resume_continues_the_step_count_and_refuses_what_does_not_fit(
    tiny: Path, lower_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = absolute_manifest(tmp_path / "m.tsv")
    out = tmp_path / "run"
    common = ["--train", str(data), "--eval", str(data), "--out", str(out), "--eval-every", "2"]
    code, _, err = finetune_cli(capsys, *common, "--model", str(tiny), "--max-steps", "4", "--resume")
    assert code == 2 and "nothing to resume" in err
    assert finetune_cli(capsys, *common, "--model", str(tiny), "--max-steps", "2")[0] == 0
    code, _, err = finetune_cli(capsys, *common, "--model", str(tiny), "--max-steps", "4")
    assert code == 2 and "--resume" in err and "--overwrite" in err
    code, _, err = finetune_cli(capsys, *common, "--model", str(lower_tiny), "--max-steps", "4", "--resume")
    assert code == 2 and "was fine-tuned from" in err
    assert finetune_cli(capsys, *common, "--model", str(tiny), "--max-steps", "4", "--resume")[0] == 0
    history = json.loads((out / "history.json").read_text())
    assert [e["step"] for e in history["evals"]] == [2, 4]
    assert [r["started_at_step"] for r in history["runs"]] == [0, 2]
    assert json.loads((out / "last" / "trainer_state.json").read_text())["step"] == 4
    seen = [e["audio_seconds_seen"] for e in history["evals"]]
    assert seen[1] == pytest.approx(2 * seen[0], abs=0.02)  # one batch a step: counted over both invocations


def test_ctrl_c_saves_last_and_exits_130(tiny: Path, tmp_path: Path) -> None:
    data = absolute_manifest(tmp_path / "m.tsv")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streaming_asr", "finetune", "--train", str(data), "--eval", str(data),
         "--model", str(tiny), "--out", str(out), "--max-steps", "100000", "--eval-every", "100000",
         "--threads", "1", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if re.search(r"step 1/100000", line):
            break
    else:
        proc.wait(timeout=30)
        pytest.fail("training never started:\n" + "".join(seen))
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stdout and "Traceback" not in stderr
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    assert state["step"] >= 1 and (out / "history.json").is_file()
    assert CtcModel.load(str(out / "last"), device="cpu").info.delimiter_id == 4


def test_lower_case_checkpoint_with_masks_keeps_its_delimiter_after_saving(lower_tiny: Path, tmp_path: Path) -> None:
    data = absolute_manifest(tmp_path / "m.tsv")
    result = finetune(
        FinetuneSettings(str(data), str(data), str(lower_tiny), str(tmp_path / "run"), max_steps=2, threads=1),
        progress=False,
    )
    assert not result.interrupted and result.steps == 2 and result.best is not None
    assert json.loads(result.history_path.read_text())["runs"][0]["attention_mask"] is True  # layer norm: masked
    assert any(" " in h for h in result.hypotheses)  # words were decoded: the delimiter matters here
    reloaded = CtcModel.load(str(result.last), device="cpu")
    assert reloaded.info.vocab[reloaded.info.delimiter_id] == "▁"
    texts = [transcribe_offline(reloaded, reloaded.info, read_audio(r["wav"], 16000)[0]).text for r in ROWS]
    assert texts == result.hypotheses


def test_a_time_budget_ends_the_run_with_an_eval(tiny: Path, tmp_path: Path) -> None:
    data = absolute_manifest(tmp_path / "m.tsv")
    result = finetune(
        FinetuneSettings(str(data), str(data), str(tiny), str(tmp_path / "run"), max_minutes=0.02, threads=1),
        progress=False,
    )
    # how many steps fit in 1.2 s depends on the machine (none on a slow one): the run ends with an eval at its last
    assert [e["step"] for e in result.history] == [result.steps] and result.best is not None


def test_an_utterance_shorter_than_one_time_mask_still_trains(tiny: Path, tmp_path: Path) -> None:
    data = manifest(tmp_path / "m.tsv", [(wav(tmp_path / "short.wav", 0.12), "A")])  # 5 frames, masks span 10
    result = finetune(
        FinetuneSettings(str(data), str(data), str(tiny), str(tmp_path / "run"), max_steps=1, threads=1),
        progress=False,
    )
    assert result.steps == 1 and not result.interrupted


@pytest.mark.standin
def test_fine_tuning_the_standin_on_slt_utterances_lowers_their_error(tmp_path: Path) -> None:
    rows = sorted((r for r in tts_dev_rows() if r["voice"] == "flite:slt"), key=lambda r: r["duration_s"])[:2]
    data = manifest(tmp_path / "slt.tsv", [(str(r["wav"]), r["reference"]) for r in rows])
    settings = FinetuneSettings(
        str(data), str(data), str(STANDIN_MODEL), str(tmp_path / "run"),
        max_steps=8, eval_every=8, eval_at_start=True, lr=1e-3, threads=1,
    )  # fmt: skip
    result = finetune(settings, progress=False)
    start, end = result.history[0], result.history[-1]
    assert (start["step"], end["step"]) == (0, 8)
    assert end["cer"] < start["cer"] - 0.1 and result.best_step == 8
    reloaded = CtcModel.load(str(result.best), device="cpu")  # "|" delimiter, upper case: decodes as before saving
    texts = [transcribe_offline(reloaded, reloaded.info, read_audio(r["wav"], 16000)[0]).text for r in rows]
    assert texts == result.hypotheses


# ------------------------------------------------------------------ manifest errors
def test_every_bad_row_is_named_by_line(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = [(str(r["wav"]), r["reference"]) for r in ROWS]
    (tmp_path / "text.wav").write_text("not audio")
    bad = [
        (str(tmp_path / "missing.wav"), "HELLO"),  # line 5
        (str(tmp_path / "text.wav"), "HELLO"),  # line 6
        (str(ROWS[0]["wav"]), "   "),  # line 7
        (wav(tmp_path / "short.wav", 0.1), "A MUCH TOO LONG TRANSCRIPT FOR A TENTH OF A SECOND"),  # line 8
        (str(ROWS[0]["wav"]), "ROOM 101"),  # line 9
    ]
    data = manifest(tmp_path / "bad.tsv", good + bad)
    args = ["--train", str(data), "--eval", str(absolute_manifest(tmp_path / "e.tsv")), "--model", str(tiny)]
    code, _, err = finetune_cli(capsys, *args, "--out", str(tmp_path / "a"))
    assert code == 2 and "Traceback" not in err and str(data) in err
    for reason, line in [
        ("audio file missing", 5),
        ("unreadable", 6),
        ("empty reference", 7),
        ("too short", 8),
        ("cannot spell", 9),
    ]:
        assert re.search(rf"1 row: [^\n]*{reason}[^\n]*: line {line}\b", err), (reason, err)
    assert "'1' x2" in err and "'0' x1" in err and "--unknown drop" in err and "--skip-bad-rows" in err
    code, _, err = finetune_cli(capsys, *args, "--out", str(tmp_path / "b"), "--skip-bad-rows", "--max-steps", "1")
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "history.json").read_text())["train"]["rows"] == 3


def test_many_bad_rows_show_the_first_five_and_a_count(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = manifest(tmp_path / "m.tsv", [(f"gone{n}.wav", "HELLO") for n in range(8)])
    code, _, err = finetune_cli(
        capsys, "--train", str(data), "--eval", str(data), "--model", str(tiny), "--out", str(tmp_path / "out")
    )
    assert code == 2 and "8 rows: audio file missing: lines 2, 3, 4, 5, 6 and 3 more (8 in all)" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("wav\ttranscript\na.wav\tHELLO\n", "line 1: the header has no 'reference' column"),
        ("reference\nHELLO\n", "no 'wav' column"),
        ("wav\treference\n", "empty manifest"),
        ("", "empty manifest"),
    ],
)
def test_manifest_structure_errors_exit_2(
    content: str, message: str, tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "m.tsv"
    data.write_text(content)
    code, _, err = finetune_cli(
        capsys, "--train", str(data), "--eval", str(data), "--model", str(tiny), "--out", str(tmp_path / "out")
    )
    assert code == 2 and message in err and str(data) in err and "Traceback" not in err


def test_unknown_characters_can_be_dropped_and_punctuation_is_reported(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    rows = [(str(r["wav"]), r["reference"]) for r in ROWS]
    rows[0] = (rows[0][0], rows[0][1].title() + ", 2 times!")
    data = manifest(tmp_path / "m.tsv", rows)
    args = ["--train", str(data), "--eval", str(data), "--model", str(tiny), "--max-steps", "1"]
    code, _, err = finetune_cli(capsys, *args, "--out", str(tmp_path / "a"))
    assert code == 2 and "'2' x1" in err and "line 2" in err
    with caplog.at_level("INFO", logger="streaming_asr.training"):
        code, _, err = finetune_cli(capsys, *args, "--out", str(tmp_path / "b"), "--unknown", "drop")
    assert code == 0, err
    logged = caplog.text
    assert (
        "dropped unknown characters: '2' x1" in logged and "removed (not in the vocabulary): ',' x1, '!' x1" in logged
    )
