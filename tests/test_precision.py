"""Precision as one setting: what `auto` resolves to, and clear refusals."""

from __future__ import annotations

import pytest

from streaming_asr.model import CtcModel, PrecisionError, ReuseInput, resolve_precision, tiny_config
from streaming_asr.model.runtime import plan_workers

ZEN3 = frozenset("fpu sse2 avx avx2 fma f16c".split())
ZEN4 = ZEN3 | {"avx512f", "avx512bw", "avx512_bf16", "avx512_vnni"}
SAPPHIRE = ZEN3 | {"avx512f", "amx_tile", "amx_bf16"}


@pytest.mark.parametrize("flags,expected", [(ZEN3, "fp32"), (ZEN4, "bf16"), (SAPPHIRE, "bf16")])
def test_auto_picks_bf16_only_where_the_cpu_runs_it_natively(
    flags: frozenset[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert resolve_precision("auto", "cpu", flags) == expected


def test_auto_is_fp16_on_cuda_and_int8_is_refused_there() -> None:
    assert resolve_precision("auto", "cuda:0", ZEN3) == "fp16"
    with pytest.raises(PrecisionError, match="CPU"):
        resolve_precision("int8", "cuda", ZEN3)
    with pytest.raises(PrecisionError, match="unknown precision"):
        resolve_precision("fp8", "cpu", ZEN3)


def test_explicit_precisions_are_kept() -> None:
    for p in ("fp32", "bf16", "fp16", "int8"):
        assert resolve_precision(p, "cpu", ZEN3) == p


def test_int8_model_runs_both_paths() -> None:
    import numpy as np

    model = CtcModel.from_config(tiny_config(), precision="int8")
    audio = model.info.normalize(np.random.default_rng(0).normal(0, 0.1, 12000).astype(np.float32))
    plain = model([audio])[0]
    reused, _ = model([ReuseInput(audio, 0, None, True)])[0]
    assert model.precision == "int8" and np.abs(plain - reused).max() < 1e-3


def test_worker_plan() -> None:
    assert plan_workers("cpu", cores=2) == plan_workers("cpu", 2, 1, cores=2)
    assert plan_workers("cpu", cores=8).threads == 4
    assert plan_workers("cpu", cores=1).workers == 1
    assert plan_workers("cuda", cores=8).workers == 1
    assert plan_workers("cpu", workers=3, threads=2, cores=2) == plan_workers("cpu", 3, 2)
