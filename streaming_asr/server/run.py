"""`streaming-asr serve`: load the model, plan workers, run the server until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from dataclasses import replace

from ..batcher import ForwardFn
from ..config import StreamConfig
from ..model import CtcModel, ModelInfo
from ..model.runtime import plan_workers
from .app import AsrServer
from .http import STREAM_PATH
from .settings import ServerSettings, settings_from_args

log = logging.getLogger("streaming_asr.server")


def serve_from_args(args: argparse.Namespace, config: StreamConfig) -> int:
    from ..cli import model_precision, usable_config

    if os.environ.get("STREAMING_ASR_TUNE_MALLOC") == "1":  # opt-in: less RSS, some compute (README)
        from ..model.runtime import tune_allocator

        tune_allocator()
    model = CtcModel.load(args.model, device=args.device, precision=model_precision(args))
    plan = plan_workers(model.device, args.model_workers, args.threads)
    settings = settings_from_args(args, usable_config(model, config), plan)
    log.info("model %s on %s: precision=%s workers=%d threads/worker=%d reuse=%s", args.model, model.device,
             model.precision, plan.workers, plan.threads, settings.engine.reuse)
    info = replace(model.info, name=args.model)
    code = asyncio.run(run_until_signal(model, info, settings))
    # Every session is concluded and logged by now; skip the interpreter's teardown of torch and its
    # thread pools (seconds on a loaded machine), so a SIGTERM'd server exits within its close timeout.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def run_until_signal(forward: ForwardFn, info: ModelInfo, settings: ServerSettings) -> int:
    server = AsrServer(forward, info, settings)
    await server.start()
    stop = asyncio.Event()
    signals = [0]
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        signals[0] += 1
        if signals[0] == 1:
            stop.set()
        else:  # a second signal: no more waiting for open sessions
            log.info("second signal: cutting the drain short")
            server.cut_drain()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    ws, http = ("wss", "https") if settings.tls_cert else ("ws", "http")
    print(f"streaming-asr: listening on {ws}://{settings.host}:{server.port}{STREAM_PATH} "
          f"(page: {http}://{settings.host}:{server.port}/)", flush=True)
    await stop.wait()
    log.info("signal received: draining for up to %.0f s, then shutting down", settings.drain_timeout_s)
    await server.drain()
    return 0
