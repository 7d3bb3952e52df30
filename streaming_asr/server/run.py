"""`streaming-asr serve`: open the port, load the model, plan workers, run until SIGINT/SIGTERM.

The port opens first with a placeholder (live, readiness `loading`), so orchestrators see the
process at once and keep traffic away until the model is loaded and warmed up.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..batcher import ForwardFn
from ..config import StreamConfig
from ..model import CtcModel, ModelInfo
from ..model.runtime import plan_workers
from ..tasks.language_id import load_language
from .app import AsrServer
from .http import STREAM_PATH, tls_context
from .loading import LoadingPlaceholder
from .settings import ServerSettings, settings_from_args

log = logging.getLogger("streaming_asr.server")


def serve_from_args(args: argparse.Namespace, config: StreamConfig) -> int:
    if os.environ.get("STREAMING_ASR_TUNE_MALLOC") == "1":  # opt-in: less RSS, some compute (README)
        from ..model.runtime import tune_allocator

        tune_allocator()
    code = asyncio.run(_serve(args, config))
    # Every session is concluded and logged by now; skip the interpreter's teardown of torch and its
    # thread pools (seconds on a loaded machine), so a SIGTERM'd server exits within its close timeout.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Signals:
    """First SIGINT/SIGTERM: stop (drain); later ones: `on_again` (cut the drain short)."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.count = 0
        self.on_again: Callable[[], None] | None = None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._got)

    def _got(self) -> None:
        self.count += 1
        if self.count == 1:
            self.stop.set()
        elif self.on_again is not None:
            log.info("second signal: cutting the drain short")
            self.on_again()


async def _serve(args: argparse.Namespace, config: StreamConfig) -> int:
    from ..cli import model_precision, usable_config

    signals = _Signals()
    placeholder = LoadingPlaceholder(args.host, args.port, tls_context(args.tls_cert, args.tls_key))
    await placeholder.start()
    log.info("port %d open while the model loads (readiness: loading)", placeholder.port)
    loop = asyncio.get_running_loop()
    loading: asyncio.Future[CtcModel] = loop.run_in_executor(
        None,
        lambda: CtcModel.load(
            args.model, device=args.device, precision=model_precision(args), language=load_language(args.language)
        ),
    )
    stopped: asyncio.Future[Any] = asyncio.ensure_future(signals.stop.wait())
    try:
        await asyncio.wait({loading, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if signals.stop.is_set():
            log.info("signal received while loading: exiting")
            return 0
        model = loading.result()  # ModelLoadError: the CLI prints it
        plan = plan_workers(model.device, args.model_workers, args.threads)
        settings = settings_from_args(args, usable_config(model, config), plan)
        log.info(
            "model %s on %s: precision=%s workers=%d threads/worker=%d reuse=%s",
            args.model,
            model.device,
            model.precision,
            plan.workers,
            plan.threads,
            settings.engine.reuse,
        )
        server = AsrServer(model, replace(model.info, name=args.model), settings)
        await server.prepare()  # warm-up: the placeholder still answers `loading`
    finally:
        stopped.cancel()
        await placeholder.stop()
    await server.listen(placeholder.port)
    return await _run(server, settings, signals)


async def run_until_signal(forward: ForwardFn, info: ModelInfo, settings: ServerSettings) -> int:
    """Serve an already loaded model until SIGINT/SIGTERM (embedding without the loading phase)."""
    signals = _Signals()
    server = AsrServer(forward, info, settings)
    await server.start()
    return await _run(server, settings, signals)


async def _run(server: AsrServer, settings: ServerSettings, signals: _Signals) -> int:
    signals.on_again = server.cut_drain
    ws, http = ("wss", "https") if settings.tls_cert else ("ws", "http")
    print(
        f"streaming-asr: listening on {ws}://{settings.host}:{server.port}{STREAM_PATH} "
        f"(page: {http}://{settings.host}:{server.port}/)",
        flush=True,
    )
    await signals.stop.wait()
    log.info("signal received: draining for up to %.0f s, then shutting down", settings.drain_timeout_s)
    await server.drain()
    return 0
