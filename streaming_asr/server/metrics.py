"""Prometheus metrics (`GET /metrics`, text exposition) with the maintained `prometheus_client`.

One registry per server (tests run several servers in one process). Every protocol reports
through the same hooks (the connection shell, the driver, the batcher), so the numbers hold for
v1, Deepgram and vosk alike; RTF is `rate(model_compute_seconds_total) / rate(audio_seconds_total)`.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

DELAY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)


class Metrics:
    """The server's metrics; `render()` is the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self, model: str, precision: str, device: str, active: Callable[[], float], capacity: Callable[[], float]
    ) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "streaming_asr_"
        Gauge(p + "sessions_active", "Sessions started and not yet over", registry=r).set_function(active)
        Gauge(
            p + "capacity_sessions", "Default-geometry sessions the measured capacity holds", registry=r
        ).set_function(capacity)
        self.sessions = Counter(
            p + "sessions",
            "Sessions ended, by the reason of their last final and protocol",
            ["outcome", "protocol"],
            registry=r,
        )
        self.refused = Counter(p + "refused", "Connections or sessions refused, by reason", ["reason"], registry=r)
        self.errors = Counter(p + "errors", "Errors sent to clients, by code", ["code"], registry=r)
        self.audio = Counter(p + "audio_seconds", "Seconds of audio accepted from clients", registry=r)
        self.compute = Counter(p + "model_compute_seconds", "Seconds spent in model forwards", registry=r)
        self.batch_size = Histogram(p + "batch_size", "Windows per model forward", buckets=BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            p + "queue_wait_seconds", "Time a live window waited for a model worker", buckets=DELAY_BUCKETS, registry=r
        )
        self.partial_delay = Histogram(
            p + "partial_delay_seconds",
            "From receiving the audio a partial covers to sending the partial",
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.final_delay = Histogram(
            p + "final_delay_seconds",
            "From receiving the audio a final covers to sending the final",
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        Gauge(p + "model_info", "The served model (value 1)", ["model", "precision", "device"], registry=r).labels(
            model, precision, device
        ).set(1)

    def on_batch(self, size: int, waits: list[float], compute_s: float, background: bool) -> None:
        """The batcher's report of one forward (background waits are not live queue waits)."""
        self.batch_size.observe(size)
        self.compute.inc(compute_s)
        if not background:
            for w in waits:
                self.queue_wait.observe(w)

    def render(self) -> bytes:
        return generate_latest(self.registry)
