"""``AsrClient``: the Python library for the ``asr.v1.Recognizer`` service.

A context manager owning one channel and the call metadata. Every call has a deadline; calls
that fail with UNAVAILABLE before the server answered are retried with exponential backoff by
gRPC's own retry policy (set in the channel's service config). Several target addresses are
spread with gRPC's ``round_robin`` load balancing. Failures surface as :class:`RecognitionError`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.audio import to_pcm16
from client.types import ModelInfo, RecognitionOptions, StreamingUpdate, StreamOptions, Transcript
from protos import asr_service_pb2 as pb
from protos import asr_service_pb2_grpc as pb_grpc

T = TypeVar("T")
AudioInput = str | Path | bytes | np.ndarray


class RecognitionError(Exception):
    """A call that failed: the gRPC status code, the server's message and the request id (for logs)."""

    def __init__(self, code: grpc.StatusCode, message: str, request_id: str = "") -> None:
        super().__init__(f"{code.name}: {message}" + (f" (request id {request_id})" if request_id else ""))
        self.code = code
        self.message = message
        self.request_id = request_id

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> RecognitionError:
        call: Any = error
        trailing = dict(call.trailing_metadata() or ()) if hasattr(call, "trailing_metadata") else {}
        return cls(call.code(), call.details() or "", str(trailing.get("x-request-id", "")))


@dataclass(frozen=True)
class TlsConfig:
    ca_file: str = ""  # PEM roots that signed the server; empty = the system's
    cert_file: str = ""  # client certificate, for servers that require mutual TLS
    key_file: str = ""
    server_name: str = ""  # overrides the name checked against the certificate (e.g. when dialling an IP)

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(read(self.ca_file), read(self.key_file), read(self.cert_file))


def _service_config(max_attempts: int, initial_backoff_s: float) -> str:
    retry = {
        "maxAttempts": max_attempts,
        "initialBackoff": f"{initial_backoff_s}s",
        "maxBackoff": "5s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if max_attempts > 1:  # gRPC rejects a retry policy with fewer than 2 attempts
        config["methodConfig"] = [{"name": [{"service": "asr.v1.Recognizer"}], "retryPolicy": retry}]
    return json.dumps(config)


def channel_options(
    target: str | Sequence[str],
    tls: TlsConfig | None,
    max_attempts: int,
    initial_backoff_s: float,
    max_message_bytes: int,
    connections: int = 1,
) -> tuple[str, list[tuple[str, Any]]]:
    """(gRPC target, channel options) shared by the sync and asyncio clients.

    With ``connections`` > 1 every channel gets its own subchannel pool, hence its own TCP
    connection: gRPC would otherwise share one connection among channels to the same address.
    """
    if connections < 1:
        raise ValueError(f"connections must be at least 1, got {connections}")
    targets = [target] if isinstance(target, str) else list(target)
    address = targets[0] if len(targets) == 1 else "ipv4:" + ",".join(targets)
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", _service_config(max_attempts, initial_backoff_s)),
        ("grpc.enable_retries", 1),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    if connections > 1:
        options.append(("grpc.use_local_subchannel_pool", 1))
    return address, options


class AsrClient:
    """``with AsrClient("localhost:50051", token=...) as c: c.transcribe("a.wav").text``.

    ``target`` is one address (any gRPC target: ``host:port``, ``dns:///name:port``) or several
    IPv4 ``ip:port`` addresses, which are balanced with ``round_robin``. ``connections`` opens that
    many connections and spreads calls over them in turn: an ``asr-server --workers N`` hands each
    connection to one worker process, so batch work should use at least N.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        token: str | None = None,
        tls: TlsConfig | None = None,
        timeout_s: float = 30.0,
        stream_timeout_s: float = 3600.0,
        max_attempts: int = 4,
        initial_backoff_s: float = 0.2,
        max_message_bytes: int = 64 * 1024 * 1024,
        connections: int = 1,
    ) -> None:
        address, options = channel_options(
            target, tls, max_attempts, initial_backoff_s, max_message_bytes, connections
        )
        self._channels = [
            grpc.secure_channel(address, tls.credentials(), options)
            if tls is not None
            else grpc.insecure_channel(address, options)
            for _ in range(connections)
        ]
        self._stubs = itertools.cycle([pb_grpc.RecognizerStub(channel) for channel in self._channels])
        self._health = health_pb2_grpc.HealthStub(self._channels[0])
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout_s = timeout_s
        self.stream_timeout_s = stream_timeout_s

    def __enter__(self) -> AsrClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    @property
    def _stub(self) -> pb_grpc.RecognizerStub:
        """The next connection's stub (itertools.cycle is safe to share between threads)."""
        return next(self._stubs)

    def transcribe(
        self, audio: AudioInput, options: RecognitionOptions | None = None, *, timeout_s: float | None = None
    ) -> Transcript:
        """Recognize one file path, encoded bytes, LINEAR16 bytes (``options.encoding``) or float array.

        A float array needs ``options.sample_rate_hz``; it is sent as LINEAR16.
        """
        options = options or RecognitionOptions()
        if isinstance(audio, np.ndarray):
            audio, options = to_pcm16(audio), replace(options, encoding="linear16", channels=1)
        elif isinstance(audio, (str, Path)):
            audio = Path(audio).read_bytes()
        request = pb.RecognizeRequest(config=options.to_proto(), audio=audio)
        response = self._call(self._stub.Recognize, request, timeout_s)
        return Transcript.from_proto(response)

    def transcribe_many(
        self, items: Sequence[AudioInput], options: RecognitionOptions | None = None, *, concurrency: int = 8
    ) -> list[Transcript]:
        """Concurrent :meth:`transcribe` calls (the server batches them); results in input order."""
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(lambda item: self.transcribe(item, options), items))

    def stream(
        self, chunks: Iterable[bytes], options: StreamOptions | None = None, *, timeout_s: float | None = None
    ) -> Iterator[StreamingUpdate]:
        """Send the config, then LINEAR16 chunks; yield partial and final results as they arrive."""
        options = options or StreamOptions()

        def requests() -> Iterator[pb.StreamingRecognizeRequest]:
            yield pb.StreamingRecognizeRequest(config=options.to_proto())
            yield from (pb.StreamingRecognizeRequest(audio=chunk) for chunk in chunks)

        responses = self._stub.StreamingRecognize(
            requests(), timeout=timeout_s or self.stream_timeout_s, metadata=self._metadata
        )
        try:
            for response in responses:
                yield from StreamingUpdate.from_proto(response)
        except grpc.RpcError as error:
            raise RecognitionError.from_rpc_error(error) from None
        finally:
            responses.cancel()  # no-op when the call has finished; stops the call if the caller breaks early

    def list_models(self, *, timeout_s: float | None = None) -> list[ModelInfo]:
        response = self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout_s)
        return [ModelInfo.from_proto(m) for m in response.models]

    def health(self, service: str = "", *, timeout_s: float | None = None) -> str:
        """The grpc.health.v1 status name: SERVING, NOT_SERVING, or SERVICE_UNKNOWN."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout_s)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return method(request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as error:
            raise RecognitionError.from_rpc_error(error) from None
