"""streaming-asr: real-time speech recognition over WebSockets with wav2vec2 CTC models."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
