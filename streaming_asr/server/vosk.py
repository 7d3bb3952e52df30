"""vosk-server's WebSocket protocol as a sans-I/O codec over the session driver.

vosk clients (Jigasi, the Asterisk and FreeSWITCH modules, vosk-server's own examples) work in
lockstep: an optional `{"config": {...}}` (no reply), then binary s16le PCM messages, each answered
by exactly one message: `{"partial": "..."}`, or `{"result": [...], "text": "..."}` when a segment
ended, then `{"eof" : 1}`, answered by the last result, after which the server closes (1000).
Each audio message is answered once the driver has computed the windows it completed (the
`Answer` command), so a partial reflects the audio just sent, as vosk's would. Finals that end
between two replies are merged into one result, so the one-reply-per-message count always holds.
vosk has no error message: refused input closes the socket (1008) with the reason.
"""

from __future__ import annotations

from typing import Any

from ..audio import PcmFormat
from ..events import Final, Partial
from .wire import (
    Answer,
    Audio,
    Closed,
    Command,
    Failure,
    Finalize,
    Invalid,
    Outgoing,
    Start,
    Stop,
    decode_json_text,
    json_text,
)

CONFIG_KEYS = ("sample_rate", "words", "phrase_list", "max_alternatives", "model", "nlsml", "partial_words")


class VoskCodec:
    """One vosk connection: config and audio in, vosk result JSON out."""

    name = "vosk"
    idle_timeout_s: float | None = None
    errors_fatal = True

    def __init__(self, default_rate: int, max_message_bytes: int) -> None:
        self.rate = default_rate
        self.words = True
        self.phrases: tuple[str, ...] = ()
        self.max_message_bytes = max_message_bytes
        self.started = False
        self.partial = ""
        self.pending: list[Final] = []
        self.refusal = ""  # the last error, for the close frame's reason

    # ------------------------------------------------------------------ in
    def opening(self) -> list[Command]:
        return []

    def on_binary(self, data: bytes) -> list[Command]:
        out: list[Command] = []
        if not self.started:  # like vosk-server, the recognizer is made at the first audio
            self.started = True
            out.append(Start(PcmFormat(self.rate), {}, True, self.phrases))
        return out + [Audio(data), Answer()]

    def on_text(self, data: bytes | str) -> list[Command]:
        msg = decode_json_text(data, self.max_message_bytes, fatal=True)
        if isinstance(msg, Invalid):
            return [msg]
        if not isinstance(msg, dict):
            return [Invalid("bad_json", "expected a JSON object: config, eof or reset", True)]
        if "config" in msg:
            return self._config(msg["config"])
        if "eof" in msg:
            return [Stop(require_start=False)]
        if "reset" in msg:
            return [Finalize(), Answer()] if self.started else [Answer()]
        return [Invalid("unknown_type", 'expected {"config": ...}, {"eof" : 1} or {"reset" : 1}', True)]

    def _config(self, config: Any) -> list[Command]:
        if not isinstance(config, dict):
            return [Invalid("invalid_start", "'config' must be an object", True)]
        if self.started:
            return []  # as vosk-server: settings apply before the first audio only
        rate = config.get("sample_rate", self.rate)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate != rate or not 0 < rate < 1e6:
            return [Invalid("invalid_start", "sample_rate must be a number", True)]
        alternatives = config.get("max_alternatives", 0)
        if not isinstance(alternatives, (int, float)) or alternatives:
            return [
                Invalid(
                    "invalid_option",
                    "max_alternatives is not supported: this server decodes one best path (set it to 0)",
                    True,
                )
            ]
        phrases = config.get("phrase_list", [])
        if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
            return [Invalid("invalid_option", "phrase_list must be a list of strings", True)]
        self.rate = int(rate)
        self.words = bool(config.get("words", True))
        # vosk's grammar marks "anything else" as [unk]; here phrases bias recognition, they do not restrict it
        self.phrases = tuple(p for p in phrases if p.strip() and not p.strip().startswith("["))
        return []

    # ----------------------------------------------------------------- out
    def render(self, event: Outgoing) -> list[str]:
        if isinstance(event, Partial):
            self.partial = event.text.lower()
        elif isinstance(event, Final):
            self.pending.append(event)
            self.partial = ""
        elif isinstance(event, Closed):
            return [self._result()]
        elif isinstance(event, Failure):  # vosk has no error message: the close frame says it
            self.refusal = f"{event.code}: {event.message}"
            return [self._result()] if self.pending else []  # a shutdown's or timeout's last final
        return []

    def render_error(self, code: str, message: str) -> list[str]:
        return []

    def answer(self) -> list[str]:
        if self.pending:
            return [self._result()]
        return [json_text({"partial": self.partial})]

    def close_frame(self, code: int, reason: str) -> tuple[int, str]:
        return code, (self.refusal or reason)[:120]

    def _result(self) -> str:
        """The pending finals as one vosk result (keys in vosk's order: result, text)."""
        finals, self.pending = self.pending, []
        text = " ".join(f.text.lower() for f in finals if f.text)
        if not text:
            return json_text({"text": ""})
        body: dict[str, Any] = {}
        if self.words:
            body["result"] = [
                {
                    "conf": round(w.confidence, 6),
                    "end": round(w.end, 6),
                    "start": round(w.start, 6),
                    "word": w.word.lower(),
                }
                for f in finals
                for w in f.words
            ]
        body["text"] = text
        return json_text(body)
