"""Python clients for the streaming-asr server: a client library and command-line tools.

The library (:mod:`clients.asr_client`) is re-exported here; the tools run as
``python -m clients.file``, ``python -m clients.mic`` and ``python -m clients.commands``.
"""

from .asr_client import (
    AsrClient,
    AsrError,
    AuthError,
    Closed,
    ConnectError,
    ConnectionLost,
    Error,
    Event,
    Final,
    LanguageDetected,
    Partial,
    PhraseMatch,
    Pong,
    Ready,
    ServerFullError,
    StartRejected,
    Word,
)
from .command_matcher import Command, CommandHit, CommandMatcher

__all__ = [
    "AsrClient",
    "AsrError",
    "AuthError",
    "Closed",
    "Command",
    "CommandHit",
    "CommandMatcher",
    "ConnectError",
    "ConnectionLost",
    "Error",
    "Event",
    "Final",
    "LanguageDetected",
    "Partial",
    "PhraseMatch",
    "Pong",
    "Ready",
    "ServerFullError",
    "StartRejected",
    "Word",
]
