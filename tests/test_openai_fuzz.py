"""Fuzz the OpenAI file endpoint: random form fields, random bytes as files, random raw bodies.

Whatever arrives, the answer is a 2xx or a 4xx in OpenAI's error shape, never a 5xx, and the
server goes on serving.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FIELDS = (
    "model",
    "language",
    "response_format",
    "timestamp_granularities[]",
    "timestamp_granularities",
    "prompt",
    "temperature",
    "stream",
    "file",
    "x",
)


def _wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, (np.sin(np.arange(4000) / 7) * 0.3).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


WAV = _wav()
values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["json", "text", "srt", "vtt", "verbose_json", "word", "segment", "en", "fr", "true", "false", "0", ""]
    ),
)
files = st.one_of(
    st.binary(max_size=300),
    st.just(WAV),
    st.just(WAV[:50]),
    st.just(WAV[:44]),
    st.binary(max_size=40).map(lambda b: WAV[:44] + b),
)


@pytest.fixture(scope="module")
def upload_server(server_factory: Any) -> Any:
    return server_factory("tiny", max_upload_mb=0.5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.sampled_from(FIELDS), values), max_size=6),
    st.lists(files, max_size=2),
    st.one_of(st.none(), st.binary(max_size=200)),
)
def test_random_forms_never_get_a_5xx(
    upload_server: Any, fields: list[tuple[str, str]], uploads: list[bytes], raw: bytes | None
) -> None:
    asyncio.run(_post(upload_server.http_url, fields, uploads, raw))


async def _post(base: str, fields: list[tuple[str, str]], uploads: list[bytes], raw: bytes | None) -> None:
    url = base + "/v1/audio/transcriptions"
    async with aiohttp.ClientSession() as session:
        if raw is not None:  # not a form at all, or a truncated multipart body
            headers = {"Content-Type": "multipart/form-data; boundary=xyz"} if raw[:1] == b"-" else {}
            async with session.post(url, data=raw, headers=headers) as resp:
                await _check(resp)
        form = aiohttp.FormData()
        for name, value in fields:
            form.add_field(name, value)
        for data in uploads:
            form.add_field("file", data, filename="a.wav", content_type="audio/wav")
        async with session.post(url, data=form) as resp:
            await _check(resp)
        async with session.get(base + "/health") as resp:
            assert resp.status == 200


async def _check(resp: aiohttp.ClientResponse) -> None:
    body = await resp.read()
    assert resp.status < 500, (resp.status, body[:300])
    if resp.status >= 400:
        err = (await resp.json())["error"]
        assert err["message"] and err["code"] and err["type"] == "invalid_request_error" or resp.status == 429
