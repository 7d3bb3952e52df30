"""ServerSettings and the `serve` command's flags for them (one place for names, defaults and help)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import SERVE_DEFAULT, ConfigError, StreamConfig, StreamLimits
from ..model.runtime import WorkerPlan
from ..tasks.language_id import add_lid_args, is_auto

if TYPE_CHECKING:
    from ..decoding.lm import LmSettings


@dataclass(frozen=True)
class ServerSettings:
    """Everything `serve` can be told; defaults are what a single-box deployment wants."""

    host: str = "127.0.0.1"
    port: int = 2700
    token: str | None = None
    metrics_token: str | None = None  # required on GET /metrics when set
    tls_cert: str | None = None  # PEM certificate (chain): serve https:// and wss:// directly
    tls_key: str | None = None  # its private key (PEM; may be in the certificate file)
    allowed_origins: tuple[str, ...] = ()  # browser origins beyond the server's own and localhost ("*": any)
    max_sessions: int = 32  # hard cap on connections, started or not
    max_unstarted: int = 16  # connections that have not sent a valid start yet
    max_message_bytes: int = 1 << 20
    start_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    send_timeout_s: float = 10.0
    close_timeout_s: float = 5.0
    drain_timeout_s: float = 30.0  # SIGTERM: open sessions may go on this long before their finals are cut
    ping_interval_s: float = 20.0  # WebSocket pings (at most idle/3): a client that reads answers them
    max_session_s: float = 4 * 3600.0
    max_backlog_s: float = 10.0  # unprocessed audio per session before the reader stops reading
    max_batch: int = 8
    max_wait_ms: float = 5.0
    model_workers: int = 1  # batches computed at once, each on its own thread
    model_threads: int | None = None  # torch threads per worker (None: leave torch's setting)
    max_load: float = 0.7  # admission: fraction of model-worker time sessions may take (0: no capacity check)
    max_session_cost: float = 4.0  # admission: one session's compute, x the default geometry's
    max_queue_delay_s: float = 1.0  # admission: refuse while the recent p95 model queue delay is over this
    engine: StreamConfig = SERVE_DEFAULT
    limits: StreamLimits = field(default_factory=StreamLimits)
    phrase_boost: float | None = None  # None: the phrase module's default
    model_language: str = "en"  # what the model transcribes: compatibility requests for others are refused
    languages: tuple[str, ...] = ()  # adapter checkpoints: what `start` may ask for (empty: all it has)
    vosk_sample_rate: int = 8000  # vosk-server's default, for clients that send no config
    vosk_root: bool = False  # also serve the vosk protocol at / (vosk clients connect to ws://host:2700)
    max_upload_mb: float = 25.0  # POST /v1/audio/transcriptions: largest file, MiB (OpenAI's limit is 25 MB)
    max_upload_s: float = 3600.0  # longest decoded audio of one upload, seconds (bounds memory: ~230 MB/h)
    max_uploads: int = 2  # uploads transcribed at once; more get 429 (0: the endpoint is off)
    upload_window_s: float = 20.0  # new audio per upload window: 20 s is the CLI's chunking (identical text)
    classifier_model: str | None = None  # POST /v1/classify: an audio-classification checkpoint (None: 404)
    units_model: str | None = None  # POST /v1/units: a pre-training checkpoint with a quantizer (None: 404)
    lid_model: str | None = None  # adapter checkpoints: language ID for `language: auto` sessions (language_id.py)
    lid_seconds: float = 3.0  # audio an auto session's language is detected from (0.5-30)
    auto_language: bool = False  # sessions that name no language detect it (--language auto; needs lid_model)
    lm: LmSettings | None = None  # --lm: finals decoded with an n-gram LM unless a start says "lm": false


def add_server_args(p: argparse.ArgumentParser) -> None:
    d = ServerSettings()
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE.toml",
        help="options from a TOML file, keys as the options in snake case; precedence: "
        "flag > STREAMING_ASR_<OPTION> environment variable > file > default",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text: key=value lines; json: one object per event with the same keys (%(default)s)",
    )
    p.add_argument("--host", default=d.host, help="address to listen on (%(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="port, 0 = any free one (%(default)s)")
    p.add_argument(
        "--token",
        default=os.environ.get("STREAMING_ASR_TOKEN"),
        help="require this token (Bearer header or ?token=); default: $STREAMING_ASR_TOKEN",
    )
    p.add_argument(
        "--metrics-token",
        default=os.environ.get("STREAMING_ASR_METRICS_TOKEN"),
        help="require this token on GET /metrics (default: open, like /health)",
    )
    p.add_argument(
        "--tls-cert",
        default=None,
        help="PEM certificate: serve https:// and wss:// (browsers allow the microphone only on https or localhost)",
    )
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert (default: in the certificate file)")
    p.add_argument(
        "--allowed-origins",
        default="",
        help="comma-separated browser origins allowed to open sessions, e.g. https://app.example.com "
        "('*': any); the server's own origin and localhost are always allowed",
    )
    p.add_argument("--max-sessions", type=int, default=d.max_sessions, help="concurrent connections (%(default)s)")
    p.add_argument(
        "--max-unstarted",
        type=int,
        default=d.max_unstarted,
        help="connections that have not sent 'start' yet (%(default)s)",
    )
    p.add_argument(
        "--max-message-bytes", type=int, default=d.max_message_bytes, help="largest message accepted (%(default)s)"
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=d.start_timeout_s,
        help="seconds a connection has to send a valid 'start' (%(default)s)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=d.idle_timeout_s,
        help="end a session whose client sends nothing or answers no ping for this long (%(default)s s)",
    )
    p.add_argument(
        "--send-timeout",
        type=float,
        default=d.send_timeout_s,
        help="close a client that reads nothing for this long while we have data for it (%(default)s s)",
    )
    p.add_argument(
        "--close-timeout",
        type=float,
        default=d.close_timeout_s,
        help="longest wait on a peer during a close or shutdown (%(default)s s)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=d.drain_timeout_s,
        help="on SIGTERM (or a first SIGINT), let open sessions go on this long while new ones are "
        "refused with 503; a second SIGINT cuts it short (%(default)s s)",
    )
    p.add_argument(
        "--max-session", type=float, default=d.max_session_s, help="longest session in seconds of audio (%(default)s)"
    )
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="windows per batched forward (%(default)s)")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=d.max_wait_ms,
        help="how long an idle model waits to fill a batch (%(default)s ms)",
    )
    p.add_argument(
        "--model-workers",
        type=int,
        default=None,
        help="batches computed at once, each on its own thread (default: 2 on CPU, 1 on CUDA)",
    )
    p.add_argument(
        "--max-load",
        type=float,
        default=d.max_load,
        help="admission: fraction of model-worker time that sessions may take; 0 turns the "
        "capacity check off (%(default)s)",
    )
    p.add_argument(
        "--model-language",
        default=d.model_language,
        help="language the model transcribes; Deepgram/OpenAI requests for another are refused (%(default)s)",
    )
    p.add_argument(
        "--languages",
        default="",
        metavar="A,B,C",
        help="adapter checkpoints (e.g. facebook/mms-1b-all): comma-separated languages sessions may ask "
        "for in 'start', plus --language, the default (default: --language alone if given, else every "
        "language the checkpoint has)",
    )
    p.add_argument(
        "--vosk-sample-rate",
        type=int,
        default=d.vosk_sample_rate,
        help="sample rate of vosk clients that send no config (%(default)s)",
    )
    p.add_argument(
        "--vosk-root",
        action="store_true",
        help="also accept vosk WebSocket clients at / (the page is still served to browsers)",
    )
    p.add_argument(
        "--max-session-cost",
        type=float,
        default=d.max_session_cost,
        help="refuse a session geometry costing more than this x the default's (%(default)s)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=d.max_upload_mb,
        help="largest file for POST /v1/audio/transcriptions, in MiB (%(default)s)",
    )
    p.add_argument(
        "--max-upload-s",
        type=float,
        default=d.max_upload_s,
        help="longest audio of one upload, in seconds (%(default)s)",
    )
    p.add_argument(
        "--upload-window",
        type=_window,
        default=d.upload_window_s,
        help="seconds of new audio per upload window; 20 = the CLI's offline chunking (same text), "
        "shorter = less memory traffic next to live sessions (%(default)s)",
    )
    p.add_argument(
        "--max-uploads",
        type=int,
        default=d.max_uploads,
        help="uploads transcribed at once, more get 429; 0 turns the endpoint off (%(default)s)",
    )
    p.add_argument(
        "--classifier-model",
        default=None,
        metavar="M",
        help="audio-classification checkpoint (hub id or directory) for POST /v1/classify, e.g. "
        "facebook/mms-lid-126; loaded at start, fp32 (default: none, the endpoint answers 404)",
    )
    p.add_argument(
        "--units-model",
        default=None,
        metavar="M",
        help="pre-training checkpoint with a quantizer (Wav2Vec2ForPreTraining, e.g. facebook/wav2vec2-base) "
        "for POST /v1/units; loaded at start, fp32 (default: none, the endpoint answers 404)",
    )
    add_lid_args(p, serve=True)


def settings_from_args(args: argparse.Namespace, config: StreamConfig, plan: WorkerPlan) -> ServerSettings:
    origins = tuple(o.strip().rstrip("/") for o in (args.allowed_origins or "").split(",") if o.strip())
    return ServerSettings(
        host=args.host,
        port=args.port,
        token=args.token or None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        metrics_token=args.metrics_token or None,
        allowed_origins=origins,
        max_sessions=args.max_sessions,
        max_unstarted=args.max_unstarted,
        max_message_bytes=args.max_message_bytes,
        start_timeout_s=args.start_timeout,
        idle_timeout_s=args.idle_timeout,
        send_timeout_s=args.send_timeout,
        close_timeout_s=args.close_timeout,
        drain_timeout_s=args.drain_timeout,
        max_session_s=args.max_session,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        model_workers=plan.workers,
        model_threads=plan.threads,
        max_load=args.max_load,
        max_session_cost=args.max_session_cost,
        engine=config,
        model_language=args.model_language,
        languages=_languages(args),
        vosk_sample_rate=args.vosk_sample_rate,
        vosk_root=args.vosk_root,
        max_upload_mb=args.max_upload_mb,
        max_upload_s=args.max_upload_s,
        max_uploads=args.max_uploads,
        upload_window_s=args.upload_window,
        classifier_model=args.classifier_model or None,
        units_model=args.units_model or None,
        lid_model=args.lid_model or None,
        lid_seconds=args.lid_seconds,
        auto_language=is_auto(getattr(args, "language", None)),
        lm=_lm(args),
    )


def _lm(args: argparse.Namespace) -> LmSettings | None:
    """--lm and its knobs (added by cli/options.py add_lm_args), checked now: a bad path is exit 2 at startup."""
    if getattr(args, "lm", None) is None:
        return None
    from ..decoding.lm import LmSettings

    settings = LmSettings(args.lm, args.lm_weight, args.word_score, args.beam_width, args.lm_phrases)
    settings.check()
    return settings


def _languages(args: argparse.Namespace) -> tuple[str, ...]:
    given = tuple(code.strip() for code in (args.languages or "").split(",") if code.strip())
    default = getattr(args, "language", None)
    default = None if is_auto(default) else default
    return given or ((default,) if default else ())


def allowed_languages(
    given: Sequence[str], checkpoint: Sequence[str], default: str | None, model: str
) -> tuple[str, ...]:
    """What `start` may ask for: `given` (--languages) as the checkpoint names them, with the default
    language first; every language the checkpoint has when none is given; () for a monolingual
    checkpoint. ConfigError for a language the checkpoint lacks (the message lists what it has)."""
    from ..model.adapters import language_list, match_language

    if not checkpoint:
        if given:
            raise ConfigError(
                f"--languages: {model!r} has no per-language adapters (it transcribes one language: "
                "see --model-language)"
            )
        return ()
    allowed = [default] if default else []
    for code in given:
        found = match_language(code, checkpoint)
        if found is None:
            raise ConfigError(
                f"--languages: {model!r} has no adapter for {code!r}; languages it has: {language_list(checkpoint)}"
            )
        allowed.append(found)
    return tuple(dict.fromkeys(allowed)) if given else tuple(checkpoint)


def _window(text: str) -> float:
    value = float(text)
    if not 1.0 <= value <= 60.0:
        raise argparse.ArgumentTypeError("--upload-window must be between 1 and 60 seconds")
    return value
