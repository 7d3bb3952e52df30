"""Audio in: PCM decoding, downmixing, streaming resampling (soxr) and file reading."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENCODINGS = {"pcm_s16le": ("<i2", 2), "pcm_f32le": ("<f4", 4), "mulaw": ("u1", 1), "alaw": ("u1", 1)}
MIN_RATE, MAX_RATE = 8000, 48000
MAX_CHANNELS = 8


class AudioFormatError(ValueError):
    """Audio that cannot be interpreted; `code` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PcmFormat:
    sample_rate: int
    encoding: str = "pcm_s16le"
    channels: int = 1

    def validate(self) -> PcmFormat:
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int):
            raise AudioFormatError("invalid_start", f"sample_rate must be an integer, got {self.sample_rate!r}")
        if not MIN_RATE <= self.sample_rate <= MAX_RATE:
            raise AudioFormatError(
                "unsupported_sample_rate", f"sample_rate {self.sample_rate} is outside {MIN_RATE}-{MAX_RATE} Hz"
            )
        if not isinstance(self.encoding, str) or self.encoding not in ENCODINGS:
            raise AudioFormatError(
                "unsupported_encoding", f"encoding {self.encoding!r} is not one of {', '.join(ENCODINGS)}"
            )
        if (
            isinstance(self.channels, bool)
            or not isinstance(self.channels, int)
            or not 1 <= self.channels <= MAX_CHANNELS
        ):
            raise AudioFormatError("unsupported_channels", f"channels must be 1-{MAX_CHANNELS}, got {self.channels!r}")
        return self

    @property
    def frame_bytes(self) -> int:
        """Bytes per sample frame (all channels)."""
        return ENCODINGS[self.encoding][1] * self.channels


def decode_pcm(data: bytes, fmt: PcmFormat) -> np.ndarray:
    """Bytes -> mono float32 in [-1, 1] at the input rate; refuses partial sample frames."""
    if len(data) % fmt.frame_bytes:
        raise AudioFormatError(
            "unaligned_audio",
            f"binary frame of {len(data)} bytes is not a whole number of {fmt.frame_bytes}-byte "
            f"{fmt.encoding} sample frames ({fmt.channels} channel(s)); frame rejected",
        )
    dtype, _ = ENCODINGS[fmt.encoding]
    samples = np.frombuffer(data, dtype=dtype)
    if fmt.encoding in G711:
        audio = G711[fmt.encoding][samples]
    elif fmt.encoding == "pcm_s16le":
        audio = samples.astype(np.float32) / 32768.0
    else:
        audio = samples.astype(np.float32)
    if fmt.channels > 1:
        audio = audio.reshape(-1, fmt.channels).mean(axis=1)
    if fmt.encoding == "pcm_f32le":
        audio = np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0)
        np.clip(audio, -1.0, 1.0, out=audio)
    out: np.ndarray = audio
    return out


def _mulaw_table() -> np.ndarray:
    """ITU-T G.711 mu-law byte -> float32 (the standard expansion; the stdlib's audioop is gone in 3.13)."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return (np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84) / 32768.0).astype(np.float32)


def _alaw_table() -> np.ndarray:
    """ITU-T G.711 A-law byte -> float32."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return (np.where(a & 0x80, magnitude, -magnitude) / 32768.0).astype(np.float32)


G711 = {"mulaw": _mulaw_table(), "alaw": _alaw_table()}


class StreamResampler:
    """Streaming resampler to the model rate; identity when the rates match."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = None
        if in_rate != out_rate:
            import soxr

            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")

    def process(self, audio: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return audio.astype(np.float32, copy=False)
        out: np.ndarray = self._stream.resample_chunk(audio.astype(np.float32, copy=False), last=last)
        return out


class AudioInput:
    """Wire bytes in, model-rate mono float32 out (decode, downmix, resample)."""

    def __init__(self, fmt: PcmFormat, model_rate: int) -> None:
        self.fmt = fmt.validate()
        self.resampler = StreamResampler(fmt.sample_rate, model_rate)
        self.input_samples = 0

    def feed(self, data: bytes) -> np.ndarray:
        audio = decode_pcm(data, self.fmt)
        self.input_samples += audio.size
        return self.resampler.process(audio)

    def flush(self) -> np.ndarray:
        """The resampler's held-back tail, at end of stream."""
        return self.resampler.process(np.zeros(0, dtype=np.float32), last=True)

    @property
    def seconds(self) -> float:
        return self.input_samples / self.fmt.sample_rate


def resample(audio: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Whole-signal resampling (offline path)."""
    if in_rate == out_rate:
        return audio.astype(np.float32, copy=False)
    import soxr

    out: np.ndarray = soxr.resample(audio.astype(np.float32, copy=False), in_rate, out_rate, quality="HQ")
    return out.astype(np.float32)


def read_audio(path: str | Path, target_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read WAV/FLAC/OGG via soundfile as mono float32; resample when target_rate is given."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = data.mean(axis=1).astype(np.float32)
    if target_rate and rate != target_rate:
        return resample(audio, rate, target_rate), target_rate
    return audio, rate
