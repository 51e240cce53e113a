"""Operational settings of ``asr-server``, kept apart from the experiment config.

Precedence, lowest to highest: the defaults below < the YAML file (``--config``) < environment
variables ``ASR_SERVER_<FIELD>`` (e.g. ``ASR_SERVER_MAX_BATCH_SIZE=16``) < command-line flags.
Every layer is checked strictly by the same loader as experiment configs: an unknown key or a
wrong type raises :class:`ConfigError` naming it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from asr.config import from_dict
from asr.errors import ConfigError

ENV_PREFIX = "ASR_SERVER_"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"  # noqa: S104 - a server in a container must listen beyond loopback
    port: int = 50051  # 0 = any free port (tests)
    model: str = "models/english.pt"  # checkpoint to serve
    model_name: str = ""  # name clients pass in RecognitionConfig.model; empty = the checkpoint's file stem
    device: str = "auto"  # auto: the GPU when one is present, else the CPU
    # Intra-op threads of the model thread; 0 = torch's default (one per core). 1 by default: the event
    # loop and audio decoding need a core too, and OpenMP threads spinning against them (or against
    # other processes) made forward passes up to 100x slower on a busy 2-core machine.
    torch_threads: int = 1
    # Server processes sharing the port (SO_REUSEPORT), each with its own model and batcher; the kernel
    # spreads client connections over them. One process uses about one core (GIL), so set this to the
    # number of cores to use; memory grows by one model per worker. 1 = a single process.
    workers: int = 1
    # A worker that dies sooner than this after starting is a crash loop (bad model, port taken): the
    # server stops with exit code 1 instead of restarting it. Later deaths are restarted.
    worker_min_uptime_s: float = 20.0
    max_batch_size: int = 32  # requests or stream chunks merged into one forward pass; 1 = batcher off
    max_batch_delay_ms: float = 10.0  # how long a Recognize request waits for company
    # How long a stream's chunk step waits for other streams' steps (never once every open stream is in).
    # Part of partial-result latency; buys batch efficiency (see server/batcher.py).
    stream_batch_delay_ms: float = 10.0
    max_queue_size: int = 512  # queued forward passes before new work is refused (RESOURCE_EXHAUSTED)
    max_request_bytes: int = 16 * 1024 * 1024  # gRPC message size limit (both directions)
    max_audio_s: float = 600.0  # Recognize: longer audio is refused
    max_stream_s: float = 3600.0  # StreamingRecognize: a stream is cut after this much audio
    max_concurrent_streams: int = 256  # open StreamingRecognize calls; more are refused
    # Slow-loris guards: a stream that sends no message for this long is cut (RESOURCE_EXHAUSTED), and
    # no stream stays open longer than max_stream_s + this in wall time, so trickling a few bytes just
    # inside the timeout cannot hold a slot for ever. The first message (config) is timed too.
    stream_idle_timeout_s: float = 30.0
    # Messages per stream: empty or tiny chunks add no audio, so max_stream_s alone would not bound
    # them; 100k covers an hour of 40 ms chunks.
    max_stream_messages: int = 100_000
    max_beam_size: int = 32  # per-request beam_size above this is refused
    max_alternatives: int = 10
    max_phrase_hints: int = 100
    default_boost: float = 2.0  # phrase hints sent with boost 0
    chunk_ms: int = 320  # streaming encoder chunk; every stream uses it, so all can share a batch
    right_context_ms: int = 160  # streaming look-ahead; latency = chunk + right context + queueing
    # Whisper front ends only (not causal): audio history re-encoded with each chunk. 30 s = the utterance
    # so far; 2000 halves the per-stream cost on long utterances for a few points of WER (BENCHMARKS.md).
    left_context_ms: int = 30_000
    endpoint_silence_ms: int = 800  # default trailing silence that ends an utterance
    max_utterance_s: float = 30.0  # default forced final
    drain_s: float = 0.0  # SIGTERM: report NOT_SERVING this long (still serving) so balancers move away first
    grace_period_s: float = 30.0  # SIGTERM: then refuse new calls; in-flight calls get this long to finish
    tokens_file: str = ""  # bearer tokens, one per line ('#' comments); empty = no authentication
    tls_cert_file: str = ""  # PEM server certificate chain; empty = plaintext
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # PEM CA; when set, clients must present a certificate it signed (mTLS)
    metrics_host: str = "0.0.0.0"  # noqa: S104
    metrics_port: int = 9464  # Prometheus /metrics over HTTP; 0 = any free port, -1 = off
    # The live-captions page, its WebSocket streams and file uploads over HTTP (HTTPS with the TLS files),
    # on the same host; -1 = off, 0 = any free port (tests). Same batcher, limits, tokens and metrics as gRPC.
    web_port: int = -1
    warm_up: bool = True  # run the model at the largest batch sizes once before reporting SERVING
    reflection: bool = True  # gRPC server reflection (grpcurl, Postman)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"  # json: one object per line with the request id

    def validate(self) -> ServerConfig:
        """Raise ConfigError on inconsistent values; returns self for chaining."""
        positive = (
            "max_batch_size",
            "max_queue_size",
            "max_request_bytes",
            "max_concurrent_streams",
            "max_stream_messages",
            "workers",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"server.{name} must be at least 1, got {getattr(self, name)}")
        if self.workers > 1 and 0 in (self.port, self.web_port):
            raise ConfigError("server.workers > 1 needs fixed ports: every worker binds the same ones")
        if self.web_port > 0 and self.web_port in (self.port, self.metrics_port):
            raise ConfigError(f"server.web_port {self.web_port} is already the gRPC or metrics port; pick another")
        if self.stream_idle_timeout_s <= 0:
            raise ConfigError(f"server.stream_idle_timeout_s must be > 0, got {self.stream_idle_timeout_s}")
        for name in ("max_batch_delay_ms", "stream_batch_delay_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"server.{name} must be >= 0, got {getattr(self, name)}")
        if self.left_context_ms < 0:
            raise ConfigError(f"server.left_context_ms must be >= 0, got {self.left_context_ms}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("server.tls_cert_file and server.tls_key_file must be given together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError("server.tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(ServerConfig)}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a server YAML file (keys are ServerConfig fields)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"server config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of ServerConfig fields")
    return data


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """``ASR_SERVER_MAX_BATCH_SIZE=16`` → ``{"max_batch_size": 16}`` (values parsed as YAML scalars)."""
    names = _field_names()
    data: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in names:
            raise ConfigError(f"unknown environment variable {key}; valid: {', '.join(sorted(names))} (upper case)")
        value = yaml.safe_load(raw) if raw else ""
        field_type = ServerConfig.__dataclass_fields__[name].type
        data[name] = raw if field_type == "str" else value  # a token path like 0123 stays a string
    return data


def load_server_config(
    path: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Merge defaults < YAML file < environment < flags (``None`` flag values are ignored)."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    data.update(read_environment(os.environ if environ is None else environ))
    data.update({k: v for k, v in (flags or {}).items() if v is not None})
    return from_dict(ServerConfig, data).validate()
