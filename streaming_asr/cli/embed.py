"""`streaming-asr embed FILES --out OUT.npz`: hidden states of audio files (per frame or mean-pooled), one
array per file in one NPZ; and the input checks the encoder commands (embed, units, classify) share.

Bad input (an unreadable, empty or too short file, a layer out of range, an output folder that does
not exist) is found before any model work where it can be, and is exit code 2 with a message; a
failure while computing is 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..model import DEFAULT_MODEL, ModelInfo
from ..tasks.embed import POOLS, TaskInputError, embed, npz_keys, select_layers
from .options import add_encoder_args


def register(sub: Any) -> None:
    e = sub.add_parser("embed", help="embeddings (hidden states) of audio files into an .npz")
    e.add_argument("files", nargs="+", help="audio files (WAV/FLAC/OGG; resampled to the model's rate)")
    which = e.add_mutually_exclusive_group()
    which.add_argument(
        "--layer",
        type=int,
        default=None,
        metavar="N",
        help="hidden_states[N] as transformers returns them with output_hidden_states=True: 0 = the "
        "transformer's input, num_hidden_layers = its last layer (default: the last)",
    )
    which.add_argument(
        "--layers", choices=["all"], default=None, help="all: every hidden state, a leading (layers,) axis"
    )
    e.add_argument(
        "--pool",
        choices=POOLS,
        default="none",
        help="none: (frames, dim) per file; mean: the mean over frames, (dim,) (default: %(default)s)",
    )
    e.add_argument(
        "--out", required=True, metavar="OUT.npz", help="NPZ to write, one array per file keyed by the file's name"
    )
    add_encoder_args(e, DEFAULT_MODEL, "a wav2vec2-family checkpoint (CTC, pre-training or bare encoder)")
    e.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        keys = npz_keys(args.files)
        durations = check_files(args.files)
        out = output_path(args.out)
    except TaskInputError as exc:
        return bad_input(exc)
    from ..model.encoder import Encoder

    encoder = Encoder.load(args.model, "embed", device=args.device, threads=args.threads)
    all_layers = args.layers == "all"
    arrays: dict[str, np.ndarray] = {}
    try:
        layers = select_layers(args.layer, all_layers, encoder.num_layers)
        check_lengths(args.files, durations, encoder.info)
        for key, path in zip(keys, args.files):
            arrays[key] = embed(encoder, read_input(path, encoder.info), layers, all_layers, args.pool)
    except TaskInputError as exc:
        return bad_input(exc)
    except (RuntimeError, MemoryError) as exc:
        return runtime_failure(exc)
    try:
        write_npz(out, arrays)
    except OSError as exc:
        print(f"streaming-asr: error: cannot write {out}: {exc}", file=sys.stderr)
        return 1
    print(f"streaming-asr: wrote {len(arrays)} array(s) to {out}", file=sys.stderr)
    return 0


# ------------------------------------------------- shared by embed, units and classify
def bad_input(exc: Exception) -> int:
    print(f"streaming-asr: error: {exc}", file=sys.stderr)
    return 2


def runtime_failure(exc: BaseException) -> int:
    print(f"streaming-asr: error: the model failed: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
    return 1


def check_files(paths: Sequence[str]) -> list[float]:
    """Each file's duration in seconds from its header (cheap: before the model loads); unreadable or
    empty files are TaskInputError."""
    import soundfile as sf

    durations = []
    for path in paths:
        try:
            info = sf.info(path)
        except (sf.SoundFileError, OSError, RuntimeError) as exc:
            raise TaskInputError("unreadable_audio", f"cannot read {path}: {_reason(exc)}") from exc
        if info.frames <= 0:
            raise TaskInputError("empty_audio", f"{path} holds no audio samples")
        durations.append(info.frames / info.samplerate)
    return durations


def check_lengths(paths: Sequence[str], durations: Sequence[float], info: ModelInfo) -> None:
    """Every file long enough for one output frame (a receptive field: 25 ms for wav2vec2)."""
    for path, seconds in zip(paths, durations):
        if info.frames_for(int(seconds * info.sample_rate)) <= 0:
            raise TaskInputError(
                "audio_too_short",
                f"{path} is {1000 * seconds:.1f} ms long; one frame needs at least "
                f"{1000 * info.receptive_field / info.sample_rate:g} ms",
            )


def read_input(path: str, info: ModelInfo) -> np.ndarray:
    """Mono float32 at the model's rate (resampled when the file has another)."""
    import soundfile as sf

    from ..audio import read_audio

    try:
        return read_audio(path, info.sample_rate)[0]
    except (sf.SoundFileError, OSError) as exc:
        raise TaskInputError("unreadable_audio", f"cannot read {path}: {_reason(exc)}") from exc


def output_path(out: str) -> Path:
    path = Path(out).expanduser()
    if not path.parent.is_dir():
        raise TaskInputError("bad_output", f"cannot write {out}: folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise TaskInputError("bad_output", f"cannot write {out}: it is a folder")
    return path


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An NPZ as np.savez writes it (np.load reads it), with any key (np.savez's keywords cannot be
    keys such as `file`), written whole or not at all."""
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, array in arrays.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)
    os.replace(partial, path)


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "error_string", "") or exc)[:200]
