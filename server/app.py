"""Assembles the grpc.aio server: servicer, batcher, health, reflection, interceptors, TLS, metrics,
and (``web_port``) the live-captions page and WebSocket API on the same event loop and batcher.

:func:`build_server` must run inside the event loop that will serve. :class:`ServerThread` runs a
server on its own loop in a background thread, for tests and benchmarks that drive it with the
synchronous client from the main thread.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from asr.errors import ConfigError
from asr.inference import Recognizer
from asr.streaming import StreamingOptions
from protos import asr_service_pb2 as pb
from protos import asr_service_pb2_grpc as pb_grpc
from server import compat_google, compat_riva
from server.batcher import DynamicBatcher, warm_up
from server.config import ServerConfig
from server.interceptors import AuthInterceptor, ErrorInterceptor, ObservabilityInterceptor
from server.metrics import ServerMetrics
from server.servicer import RecognizerServicer
from server.tokens import BearerTokens
from server.web import WebServer

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recognizer"].full_name  # "asr.v1.Recognizer"


@dataclass
class RunningServer:
    server: aio.Server
    port: int
    metrics_port: int | None  # None when the exporter is off
    health: health.aio.HealthServicer
    batcher: DynamicBatcher
    metrics: ServerMetrics
    web: WebServer | None = None
    web_port: int | None = None  # None when the web page is off

    async def stop(self, grace_s: float | None, drain_s: float = 0.0) -> None:
        """Health NOT_SERVING (for ``drain_s``, still serving), then refuse new calls, let in-flight
        ones (gRPC calls and WebSocket streams alike) finish within ``grace_s``, and drain the batcher."""
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(drain_s)
        await asyncio.gather(self.server.stop(grace_s), *([self.web.stop(grace_s)] if self.web else []))
        self.batcher.close()
        self.metrics.close()


def model_name(cfg: ServerConfig) -> str:
    return cfg.model_name or Path(cfg.model).stem


def _read(path: str, what: str) -> bytes:
    if not Path(path).is_file():
        raise ConfigError(f"{what} {path} does not exist")
    return Path(path).read_bytes()


def server_credentials(cfg: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS from PEM files; with a client CA, clients must present a certificate it signed (mutual TLS)."""
    if not cfg.tls_cert_file:
        return None
    pair = (_read(cfg.tls_key_file, "TLS key file"), _read(cfg.tls_cert_file, "TLS certificate file"))
    client_ca = _read(cfg.tls_client_ca_file, "TLS client CA file") if cfg.tls_client_ca_file else None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


def web_ssl_context(cfg: ServerConfig) -> ssl.SSLContext | None:
    """HTTPS for the web port from the same PEM files as gRPC (browsers only allow the microphone on
    https:// pages, or on localhost); with a client CA, browsers must present a certificate too."""
    if not cfg.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    if cfg.tls_client_ca_file:
        context.load_verify_locations(cfg.tls_client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def web_info(cfg: ServerConfig, recognizer: Recognizer) -> dict[str, object]:
    """What the page and WebSocket clients are told about the stream they get (``/v1/info``, ``ready``)."""
    return {
        "model": model_name(cfg),
        "sample_rate_hz": recognizer.sample_rate,
        "chunk_ms": cfg.chunk_ms,
        "right_context_ms": cfg.right_context_ms,
        "max_stream_s": cfg.max_stream_s,
        "max_audio_s": cfg.max_audio_s,
        "max_request_bytes": cfg.max_request_bytes,
    }


async def build_server(cfg: ServerConfig, recognizer: Recognizer) -> RunningServer:
    """Create, bind and start the server (port 0 picks a free port, reported in ``RunningServer.port``)."""
    cfg.validate()
    if cfg.warm_up:
        options = StreamingOptions(
            chunk_ms=cfg.chunk_ms, right_context_ms=cfg.right_context_ms, left_context_ms=cfg.left_context_ms
        )
        await asyncio.to_thread(warm_up, recognizer, options, cfg.max_batch_size)
    metrics = ServerMetrics()
    interceptors: list[aio.ServerInterceptor] = [ObservabilityInterceptor(metrics)]
    tokens = BearerTokens.from_file(cfg.tokens_file) if cfg.tokens_file else None
    if tokens is not None:
        interceptors.append(AuthInterceptor(tokens))
    interceptors.append(ErrorInterceptor())
    credentials = server_credentials(cfg)
    server = aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", cfg.max_request_bytes),
            ("grpc.max_send_message_length", cfg.max_request_bytes),
            ("grpc.max_concurrent_streams", max(100, cfg.max_concurrent_streams + 64)),  # per HTTP/2 connection
        ],
    )
    batcher = DynamicBatcher(
        recognizer,
        max_batch_size=cfg.max_batch_size,
        max_batch_delay_ms=cfg.max_batch_delay_ms,
        stream_batch_delay_ms=cfg.stream_batch_delay_ms,
        max_queue_size=cfg.max_queue_size,
        metrics=metrics,
    )
    core = RecognizerServicer(recognizer, batcher, cfg, metrics, model_name(cfg))
    pb_grpc.add_RecognizerServicer_to_server(core, server)
    # Drop-in Riva and Google Speech v1 APIs on the same port, through the same servicer and batcher.
    compat_riva.add_to_server(compat_riva.RivaServicer(core, model_name(cfg), recognizer.sample_rate), server)
    compat_google.add_to_server(compat_google.SpeechServicer(core), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if cfg.reflection:
        names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    address = f"{cfg.host}:{cfg.port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        batcher.close()
        raise ConfigError(f"cannot listen on {address}; is the port in use?")
    metrics_port = metrics.serve_http(cfg.metrics_host, cfg.metrics_port) if cfg.metrics_port >= 0 else None
    await server.start()
    web, web_port = None, None
    if cfg.web_port >= 0:
        web = WebServer(cfg, core, metrics, tokens, web_info(cfg, recognizer), web_ssl_context(cfg))
        try:
            web_port = await web.start()
        except OSError as exc:
            await server.stop(None)
            batcher.close()
            metrics.close()
            raise ConfigError(f"cannot serve the web page on {cfg.host}:{cfg.web_port}: {exc}") from exc
    for service in ("", SERVICE_NAME, compat_riva.SERVICE_NAME, compat_google.SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    logger.info(
        "serving %s on port %d (web %s, metrics %s, tls %s, auth %s)",
        model_name(cfg), port, web_port, metrics_port, bool(credentials), bool(cfg.tokens_file),
    )
    return RunningServer(server, port, metrics_port, health_servicer, batcher, metrics, web, web_port)


class ServerThread:
    """A server on its own event loop in a daemon thread: ``with ServerThread(cfg, rec) as s: s.port``."""

    def __init__(self, cfg: ServerConfig, recognizer: Recognizer, *, grace_s: float | None = 1.0) -> None:
        self._cfg, self._recognizer, self._grace_s = cfg, recognizer, grace_s
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.running: RunningServer | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="asr-server", daemon=True)

    @property
    def port(self) -> int:
        assert self.running is not None
        return self.running.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def web_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the web page (the config must set ``web_port``)."""
        assert self.running is not None and self.running.web_port is not None, "web_port is off"
        return f"http://127.0.0.1:{self.running.web_port}"

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _main(self) -> None:
        self._loop, self._stopped = asyncio.get_running_loop(), asyncio.Event()
        try:
            self.running = await build_server(self._cfg, self._recognizer)
        except BaseException as exc:
            self._error = exc
            return
        finally:
            self._ready.set()
        await self._stopped.wait()
        await self.running.stop(self._grace_s)
