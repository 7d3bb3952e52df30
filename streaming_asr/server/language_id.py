"""A session's language on an adapter checkpoint, and `language: auto` (detected by --lid-model).

`session_language` resolves what `start` asks for (or the server's default, `--language`) against
the allowed languages; `language_info` is that language's ModelInfo (its adapter read on first use).

An auto session (`"language": "auto"` in `start`, or no language with `serve --language auto`;
only on an adapter checkpoint with a LID model) gets `ready` at once with `"language": "auto"`.
Its audio is held, nothing decoded, until `--lid-seconds` of it are in (at most the backlog a
session may hold before its reader stops reading, 10 s) or the stream ends or asks for a final
earlier (stop, finalize, disconnect, timeout, shutdown). Then the LID model runs on what there is,
on its own thread (never the event loop), and the session is opened in the detected language (its
ModelInfo, LanguageInput windows, phrases compiled for it) with all the held audio, from sample 0:
nothing is lost or decoded twice, and every sample still ends in a final. One `language` message
goes out then, before the session's first partial or final. The cost: partials and finals start
only after --lid-seconds of audio plus one LID forward.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import ConfigError, StreamConfig
from ..model import ModelInfo, ModelLoadError
from ..model.adapters import language_list, match_language
from ..session import StreamingSession
from ..tasks.language_id import AUTO, check_seconds, detect_language, is_auto
from .wire import DriverError, LanguageDetected

if TYPE_CHECKING:
    from ..model.adapters import Adapters
    from ..model.encoder import Encoder
    from .app import ServerContext
    from .settings import ServerSettings

log = logging.getLogger("streaming_asr.server")
CompilePhrases = Callable[[list[str], float | None, ModelInfo], Awaitable[Any]]


class LanguageId:
    """The server's LID model (--lid-model, fp32, loaded at start) and the one thread it runs on."""

    def __init__(self, settings: ServerSettings) -> None:
        assert settings.lid_model
        self.name = settings.lid_model
        self.seconds = check_seconds(settings.lid_seconds)
        self.encoder: Encoder | None = None
        init = None
        if settings.model_threads:
            from ..model.runtime import set_torch_threads

            init = partial(set_torch_threads, settings.model_threads)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-lid", initializer=init)

    async def load(self, device: str) -> None:
        """Off the loop; a bad checkpoint (no classification head) fails the start like a bad --model."""
        from ..model.encoder import Encoder

        if self.encoder is None:
            load = partial(Encoder.load, self.name, "classify", device=device)
            self.encoder = await asyncio.get_running_loop().run_in_executor(self._executor, load)
            log.info(
                "language id %s: %d labels on %s, from %g s", self.name, len(self.encoder.labels), device, self.seconds
            )

    async def detect(self, audio: np.ndarray, rate: int, languages: Sequence[str], default: str) -> LanguageDetected:
        """The served language `audio` is in (see tasks/language_id.py), computed on the LID thread."""
        assert self.encoder is not None, "LanguageId.load first"
        run = partial(detect_language, self.encoder, audio, rate, languages, default, self.seconds)
        found = await asyncio.get_running_loop().run_in_executor(self._executor, run)
        return LanguageDetected(found.language, found.score, found.label, round(found.seconds, 3), found.fallback)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def lid_for(settings: ServerSettings, adapters: Adapters | None) -> LanguageId | None:
    """The LID model the settings ask for (not loaded yet); ConfigError where `auto` cannot work."""
    if settings.auto_language and not settings.lid_model:
        raise ConfigError("--language auto needs --lid-model M (a language-ID checkpoint, e.g. facebook/mms-lid-126)")
    if settings.lid_model and settings.lid_seconds > settings.max_backlog_s:
        raise ConfigError(
            f"--lid-seconds {settings.lid_seconds:g}: a server holds at most {settings.max_backlog_s:g} s of a "
            "session's audio (its backlog limit) before it stops reading"
        )
    if settings.lid_model and adapters is None:
        raise ConfigError(
            "--lid-model picks a session's adapter, but this model has no per-language adapters "
            "(it transcribes one language; an MMS checkpoint such as facebook/mms-1b-all has them)"
        )
    return LanguageId(settings) if settings.lid_model else None


def session_language(ctx: ServerContext, asked: str | None) -> str | None:
    """The session's adapter language, AUTO to detect it, None on a monolingual checkpoint;
    ConfigError (invalid_option) for one not allowed."""
    adapters = ctx.adapters
    if is_auto(asked):
        if adapters is None or ctx.lid is None:
            why = "the model has no per-language adapters" if adapters is None else "no --lid-model is configured"
            raise ConfigError(f"language 'auto' needs an adapter checkpoint and a language-ID model here: {why}")
        return AUTO
    if adapters is None:
        served = ctx.settings.model_language
        if asked is not None and match_language(asked, [served]) is None:
            raise ConfigError(f"language {asked!r} is not served: this model transcribes {served!r}; allowed: {served}")
        return None
    if asked is None:
        return AUTO if ctx.settings.auto_language and ctx.lid is not None else adapters.default
    found = match_language(asked, ctx.languages)
    if found is None:
        raise ConfigError(f"language {asked!r} is not served here; allowed: {language_list(ctx.languages)}")
    return found


async def language_info(ctx: ServerContext, language: str | None) -> ModelInfo:
    """The ModelInfo a session decodes with: its language's (the adapter read on first use)."""
    adapters = ctx.adapters
    if adapters is None or language is None or language in (AUTO, adapters.default):
        return ctx.info
    try:
        return await asyncio.get_running_loop().run_in_executor(ctx.cpu_pool, adapters.info, language)
    except ModelLoadError as exc:
        raise DriverError("invalid_option", f"language {language!r} cannot be loaded: {exc}") from None


@dataclass
class Pending:
    """An auto session until its language is known: what its StreamingSession will be made with."""

    config: StreamConfig
    interim_results: bool
    phrases: list[str]
    boost: float | None
    samples: int  # audio held before detecting

    @classmethod
    def create(
        cls, ctx: ServerContext, config: StreamConfig, interim: bool, phrases: list[str], boost: float | None
    ) -> Pending:
        assert ctx.lid is not None
        return cls(config, interim, phrases, boost, max(1, int(ctx.lid.seconds * ctx.info.sample_rate)))

    def ready(self, inbox: Sequence[tuple[str, Any]]) -> bool:
        """Detect now: enough audio is in, or something else is (a finalize or the end of the stream)."""
        held = 0
        for kind, item in inbox:
            if kind != "audio":
                return True
            held += item.size
            if held >= self.samples:
                return True
        return False

    def audio(self, inbox: Sequence[tuple[str, Any]]) -> np.ndarray:
        """The audio to detect from: the first `samples` before any finalize or finish (the inbox is left as is)."""
        pieces: list[np.ndarray] = []
        held = 0
        for kind, item in inbox:
            if kind != "audio" or held >= self.samples:
                break
            pieces.append(item)
            held += item.size
        return np.concatenate(pieces)[: self.samples] if pieces else np.zeros(0, np.float32)

    async def open(
        self, ctx: ServerContext, audio: np.ndarray, compile_phrases: CompilePhrases
    ) -> tuple[LanguageDetected, StreamingSession]:
        """Detect, then the session in that language (its adapter's ModelInfo, its phrases)."""
        assert ctx.lid is not None and ctx.adapters is not None
        found = await ctx.lid.detect(audio, ctx.info.sample_rate, ctx.languages, ctx.adapters.default)
        info = await language_info(ctx, found.language)
        rescorer = await compile_phrases(self.phrases, self.boost, info)
        return found, StreamingSession(info, self.config, interim_results=self.interim_results, rescorer=rescorer)
