"""Prometheus metrics of one server, on their own registry, and the HTTP exporter.

A registry per server (rather than prometheus-client's global one) lets tests and benchmarks run
several servers in one process without "duplicated timeseries" errors.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Latency buckets from 5 ms to 30 s: partial results should land in the first few, long unary calls in the last.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_RTF_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class ServerMetrics:
    """The metric objects every part of the server records into."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("asr_requests", "RPCs by method and status code", ["method", "code"], registry=r)
        self.latency = Histogram(
            "asr_request_latency_seconds", "RPC wall time", ["method"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.audio_seconds = Counter("asr_audio_seconds", "Audio received, in seconds", ["method"], registry=r)
        self.real_time_factor = Histogram(
            "asr_real_time_factor", "Recognize processing time / audio duration", buckets=_RTF_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "asr_batch_size", "Items per forward pass", ["kind"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.result_latency = Histogram(
            "asr_stream_result_latency_seconds",
            "Streaming: audio arrival to result sent",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # With several worker processes (server/workers.py) the exporter sums the live workers' gauges.
        self.active_streams = Gauge(
            "asr_active_streams", "Open StreamingRecognize calls", registry=r, multiprocess_mode="livesum"
        )
        self.queue_depth = Gauge(
            "asr_batcher_queue_depth", "Forward passes waiting for the model", registry=r, multiprocess_mode="livesum"
        )
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve_http(self, host: str, port: int) -> int:
        """Start the /metrics exporter in a daemon thread; returns the bound port (port 0 = any)."""
        self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
