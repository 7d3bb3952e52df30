"""`POST /v1/embed`, `/v1/classify`, `/v1/units` and `/v1/align`: the CLI's `embed`, `classify`,
`units` and `align` on the live server.

Embeddings come from the serving CTC model's encoder (its weights, device and precision: exact
fp32 values only from a server at --precision fp32); classification from a separate checkpoint,
--classifier-model, units from --units-model, each loaded in fp32 at start-up (404 without it). Bodies are read by
audio_requests.py under the upload limits; at most --max-uploads of these requests are in flight
(more get 429; 0 turns the endpoints off), and their model work runs one request at a time on a
thread of its own at the lowest CPU priority (like upload windows), never on the event loop.
Alignment's windows go through the shared batcher's background lane, as upload windows do, so live
sessions keep their model time.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

from ..batcher import background_thread_init
from ..model import CtcModel
from ..model.encoder import Encoder
from ..tasks.align import AlignError, align_audio
from ..tasks.align_formats import render
from ..tasks.classify import DEFAULT_TOP_K, classify
from ..tasks.embed import POOLS, TaskInputError, embed, select_layers
from ..tasks.units import unit_indices, units_json
from .audio_requests import AudioRequest, RequestError, read_audio_request
from .http import error_response, json_response, token_ok

if TYPE_CHECKING:
    from .app import ServerContext

log = logging.getLogger("streaming_asr.server.model_routes")

NPY_TYPE = "application/x-npy"
MAX_RESULT_BYTES = 64 << 20  # largest array one answer carries (.npy)
MAX_JSON_VALUES = 1 << 21  # largest array answered as JSON (~40 MB of text)
EMBED_FIELDS = ("layer", "layers", "pool")
CLASSIFY_FIELDS = ("top_k",)
ALIGN_FIELDS = ("transcript", "format")
ALIGN_TYPES = {"json": "application/json", "srt": "application/x-subrip", "vtt": "text/vtt", "textgrid": "text/plain"}
RETRY_AFTER_S = 1
Reply = tuple[bytes, str, dict[str, str]]  # body, content type, extra headers


class ModelRoutes:
    """The two handlers; `stopping()` tells whether the server is shutting down or draining."""

    def __init__(self, ctx: ServerContext, stopping: Callable[[], bool]) -> None:
        self.ctx, self.settings, self.stopping = ctx, ctx.settings, stopping
        self.active = 0
        self.classifier: Encoder | None = None
        self.quantizer: Encoder | None = None  # --units-model
        self._encoder: Encoder | None = None
        self._model: asyncio.Semaphore | None = None
        init = None
        if self.settings.model_threads:
            from ..model.runtime import set_torch_threads

            init = partial(set_torch_threads, self.settings.model_threads)
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="asr-model-tasks", initializer=partial(background_thread_init, init)
        )

    async def prepare(self) -> None:
        """Load --classifier-model and --units-model (off the loop); a bad one fails the start like a bad --model."""
        if self.settings.classifier_model and self.classifier is None:
            self.classifier = await self._load(self.settings.classifier_model, "classify")
            log.info("classifier %s: %d labels (fp32)", self.settings.classifier_model, len(self.classifier.labels))
        if self.settings.units_model and self.quantizer is None:
            self.quantizer = await self._load(self.settings.units_model, "units")
            q = self.quantizer
            log.info("units %s: %d group(s) of %d entries (fp32)", self.settings.units_model, q.groups, q.entries)

    async def _load(self, name: str, task: str) -> Encoder:
        """An fp32 checkpoint for `task` on the serving model's device, loaded in a thread."""
        device = str(getattr(self.ctx.batcher.forward, "device", "cpu"))
        return await asyncio.get_running_loop().run_in_executor(None, partial(Encoder.load, name, task, device=device))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def encoder(self) -> Encoder | None:
        """The serving model's encoder (None when the server runs something other than a CtcModel)."""
        forward = self.ctx.batcher.forward
        if self._encoder is None and isinstance(forward, CtcModel):
            self._encoder = Encoder.from_ctc(forward)
        return self._encoder

    # ------------------------------------------------------------ handlers
    async def embed(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "embed", self._embed)

    async def classify(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "classify", self._classify)

    async def units(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "units", self._units)

    async def align(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "align", self._align)

    async def _handle(
        self, request: web.Request, what: str, work: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Every failure is `{"error", "message"}` with its status, never a traceback."""
        try:
            return await work(request)
        except RequestError as exc:
            log.info("%s refused from %s: %d %s: %s", what, request.remote, exc.status, exc.code, exc.message)
            return exc.response()
        except TaskInputError as exc:
            log.info("%s refused from %s: 400 %s: %s", what, request.remote, exc.code, exc)
            return error_response(400, exc.code, str(exc))
        except AlignError as exc:
            log.info("align refused from %s: 400 %s", request.remote, exc)
            return error_response(400, "invalid_transcript", str(exc))
        except Exception:  # noqa: BLE001 - logged here, the client gets a 500
            if self.stopping():
                return _shutting_down().response()
            log.exception("%s from %s failed", what, request.remote)
            return error_response(500, "internal_error", f"the server had an error computing the {what}; it is logged")

    def _admit(self, request: web.Request, ready: bool, absent: str) -> None:
        s = self.settings
        if not token_ok(request, s.token):
            raise RequestError(401, "unauthorized", "missing or wrong token", {"WWW-Authenticate": "Bearer"})
        if not ready:
            raise RequestError(404, "not_found", absent)
        if s.max_uploads <= 0:
            raise RequestError(404, "not_found", "model endpoints are turned off on this server (--max-uploads 0)")
        if self.stopping():
            raise _shutting_down()
        if self.active >= s.max_uploads:
            raise RequestError(
                429,
                "busy",
                f"the server is answering {self.active} model request(s), its limit; retry shortly",
                {"Retry-After": str(RETRY_AFTER_S)},
            )

    async def _embed(self, request: web.Request) -> web.StreamResponse:
        encoder = self.encoder
        self._admit(request, encoder is not None, "this server's model has no encoder to embed with")
        assert encoder is not None
        self.active += 1
        try:
            req = await read_audio_request(request, self.ctx, EMBED_FIELDS)
            layer, all_layers, pool = _embed_params(req)
            layers = select_layers(layer, all_layers, encoder.num_layers)
            npy = _wants_npy(request.headers.get("Accept", ""), pooled=pool == "mean")
            frames = encoder.info.frames_for(req.audio.size)
            values = (1 if pool == "mean" else frames) * len(layers) * encoder.hidden_size
            if values * 4 > MAX_RESULT_BYTES or (not npy and values > MAX_JSON_VALUES):
                raise RequestError(
                    400,
                    "result_too_large",
                    f"the answer would hold {values} values, over this server's limit of "
                    f"{MAX_RESULT_BYTES // 4 if npy else MAX_JSON_VALUES}; ask for pool=mean, one layer, shorter "
                    f"audio{'' if npy else ' or .npy (Accept: application/x-npy)'}",
                )
            meta = {
                "model": self.ctx.info.name,
                "precision": encoder.precision,
                "layers": layers,
                "pool": pool,
                "frame_s": round(encoder.info.frame_seconds, 6),
                "frames": frames,
            }
            body, ctype, headers = await self._run(
                _embed_reply, encoder, req.audio, layers, all_layers, pool, npy, meta
            )
        finally:
            self.active -= 1
        log.info(
            "embed from %s: %.1f s %s, layers=%s pool=%s -> %s",
            request.remote,
            req.seconds,
            req.container,
            "all" if all_layers else layers[0],
            pool,
            ctype,
        )
        return _reply(body, ctype, headers)

    async def _classify(self, request: web.Request) -> web.StreamResponse:
        classifier = self.classifier
        self._admit(request, classifier is not None, "no classifier on this server: start it with --classifier-model M")
        assert classifier is not None
        self.active += 1
        try:
            req = await read_audio_request(request, self.ctx, CLASSIFY_FIELDS, classifier.info.sample_rate)
            top_k = _int_param(req, "top_k", DEFAULT_TOP_K)
            if top_k < 0:
                raise RequestError(400, "invalid_parameter", f"top_k must be 0 (all labels) or more, got {top_k}")
            labels = await self._run(classify, classifier, req.audio, top_k)
        finally:
            self.active -= 1
        log.info(
            "classify from %s: %.1f s %s -> %s",
            request.remote,
            req.seconds,
            req.container,
            labels[0]["label"] if labels else "-",
        )
        return json_response(
            200, {"model": classifier.info.name, "duration_s": round(req.seconds, 3), "labels": labels}
        )

    async def _units(self, request: web.Request) -> web.StreamResponse:
        quantizer = self.quantizer
        self._admit(request, quantizer is not None, "no units model on this server: start it with --units-model M")
        assert quantizer is not None
        self.active += 1
        try:
            req = await read_audio_request(request, self.ctx, (), quantizer.info.sample_rate)
            units = await self._run(unit_indices, quantizer, req.audio)
        finally:
            self.active -= 1
        log.info("units from %s: %.1f s %s, %d frame(s)", request.remote, req.seconds, req.container, len(units))
        if _wants_npy(request.headers.get("Accept", ""), pooled=True):
            buf = io.BytesIO()
            np.save(buf, units, allow_pickle=False)
            return _reply(buf.getvalue(), NPY_TYPE, {"X-Frame-Seconds": str(round(quantizer.info.frame_seconds, 6))})
        return json_response(200, units_json(quantizer, units))

    async def _align(self, request: web.Request) -> web.StreamResponse:
        self._admit(request, True, "")
        self.active += 1
        try:
            req = await read_audio_request(request, self.ctx, ALIGN_FIELDS)
            transcript = req.param("transcript") or ""
            if not transcript.strip():
                raise RequestError(400, "missing_transcript", "send the text to align in the 'transcript' field")
            fmt = (req.param("format") or "json").lower()
            if fmt not in ALIGN_TYPES:
                raise RequestError(400, "invalid_parameter", f"format must be one of {', '.join(ALIGN_TYPES)}")
            loop, batcher, info = asyncio.get_running_loop(), self.ctx.batcher, self.ctx.info

            def forward(windows: Sequence[np.ndarray]) -> list[Any]:
                """From the model-tasks thread: each window through the batcher's background lane."""
                futures = [asyncio.run_coroutine_threadsafe(batcher.infer(w, background=True), loop) for w in windows]
                return [f.result() for f in futures]

            alignment = await self._run(align_audio, forward, info, req.audio, transcript)
            body = render(alignment, fmt)
        finally:
            self.active -= 1
        log.info(
            "align from %s: %.1f s %s, %d word(s) -> %s",
            request.remote,
            req.seconds,
            req.container,
            len(alignment.words),
            fmt,
        )
        return _reply(body.encode("utf-8"), ALIGN_TYPES[fmt], {}, charset="utf-8")

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the model-tasks thread, one request at a time."""
        if self._model is None:
            self._model = asyncio.Semaphore(1)
        async with self._model:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def _embed_reply(
    encoder: Encoder,
    audio: np.ndarray,
    layers: Sequence[int],
    all_layers: bool,
    pool: str,
    npy: bool,
    meta: dict[str, Any],
) -> Reply:
    """The embedding and its rendering (both off the loop: a large JSON body takes a while to write)."""
    array = embed(encoder, audio, layers, all_layers, pool)
    if npy:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        headers = {"X-Frame-Seconds": str(meta["frame_s"]), "X-Layers": ",".join(map(str, layers))}
        return buf.getvalue(), NPY_TYPE, headers
    body = {**meta, "shape": list(array.shape), "embedding": array.tolist()}
    return json.dumps(body).encode(), "application/json", {}


def _reply(body: bytes, ctype: str, headers: dict[str, str], charset: str | None = None) -> web.Response:
    return web.Response(
        body=body,
        content_type=ctype,
        charset=charset,
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", **headers},
    )


def _embed_params(req: AudioRequest) -> tuple[int | None, bool, str]:
    layer = _int_param(req, "layer", None)
    layers = req.param("layers")
    if layers not in (None, "", "all"):
        raise RequestError(400, "invalid_parameter", f"layers must be 'all', got {layers[:20]!r}")
    all_layers = layers == "all"
    if all_layers and layer is not None:
        raise RequestError(400, "invalid_parameter", "give layer=N or layers=all, not both")
    pool = req.param("pool") or "none"
    if pool not in POOLS:
        raise RequestError(400, "invalid_parameter", f"pool must be one of {', '.join(POOLS)}, got {pool[:20]!r}")
    return layer, all_layers, pool


def _int_param(req: AudioRequest, name: str, default: int | None) -> Any:
    text = req.param(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise RequestError(400, "invalid_parameter", f"{name} must be an integer, got {text[:20]!r}") from None


def _wants_npy(accept: str, pooled: bool) -> bool:
    """Accept: application/x-npy (or octet-stream) -> .npy; application/json -> JSON; otherwise JSON for
    a pooled vector and .npy for frame sequences."""
    accept = accept.lower()
    if NPY_TYPE in accept or "application/octet-stream" in accept:
        return True
    if "application/json" in accept:
        return False
    return not pooled


def _shutting_down() -> RequestError:
    return RequestError(
        503, "shutting_down", "the server is shutting down; retry on another instance", {"Retry-After": "5"}
    )
