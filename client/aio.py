"""``AsyncAsrClient``: :class:`client.AsrClient` for asyncio programs, on ``grpc.aio``.

Same constructor, same options and result types, same retry policy and round-robin balancing;
every method is a coroutine (``stream`` an async iterator). Use it where many streams or requests
share one event loop, e.g. a web backend relaying browsers' microphones.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.audio import to_pcm16
from client.client import AudioInput, RecognitionError, TlsConfig, channel_options
from client.types import ModelInfo, RecognitionOptions, StreamingUpdate, StreamOptions, Transcript
from protos import asr_service_pb2 as pb
from protos import asr_service_pb2_grpc as pb_grpc


class AsyncAsrClient:
    """``async with AsyncAsrClient("localhost:50051") as c: (await c.transcribe("a.wav")).text``.

    Same arguments as :class:`client.AsrClient`.
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
            aio.secure_channel(address, tls.credentials(), options)
            if tls is not None
            else aio.insecure_channel(address, options)
            for _ in range(connections)
        ]
        self._stubs = itertools.cycle([pb_grpc.RecognizerStub(channel) for channel in self._channels])
        self._health = health_pb2_grpc.HealthStub(self._channels[0])
        self._metadata = aio.Metadata(("authorization", f"Bearer {token}")) if token else None
        self.timeout_s = timeout_s
        self.stream_timeout_s = stream_timeout_s

    async def __aenter__(self) -> AsyncAsrClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    @property
    def _stub(self) -> pb_grpc.RecognizerStub:
        """The next connection's stub (see :class:`client.AsrClient` on ``connections``)."""
        return next(self._stubs)

    async def transcribe(
        self, audio: AudioInput, options: RecognitionOptions | None = None, *, timeout_s: float | None = None
    ) -> Transcript:
        """Recognize one file path, encoded bytes, LINEAR16 bytes (``options.encoding``) or float array."""
        options = options or RecognitionOptions()
        if isinstance(audio, np.ndarray):
            audio, options = to_pcm16(audio), replace(options, encoding="linear16", channels=1)
        elif isinstance(audio, (str, Path)):
            audio = await asyncio.to_thread(Path(audio).read_bytes)
        request = pb.RecognizeRequest(config=options.to_proto(), audio=audio)
        return Transcript.from_proto(await self._call(self._stub.Recognize, request, timeout_s))

    async def transcribe_many(
        self, items: Sequence[AudioInput], options: RecognitionOptions | None = None, *, concurrency: int = 8
    ) -> list[Transcript]:
        """At most ``concurrency`` :meth:`transcribe` calls in flight; results in input order."""
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(item: AudioInput) -> Transcript:
            async with gate:
                return await self.transcribe(item, options)

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def stream(
        self,
        chunks: Iterable[bytes] | AsyncIterable[bytes],
        options: StreamOptions | None = None,
        *,
        timeout_s: float | None = None,
    ) -> AsyncIterator[StreamingUpdate]:
        """Send the config, then LINEAR16 chunks (a plain or async iterable); yield partials and finals."""
        options = options or StreamOptions()

        async def requests() -> AsyncIterator[pb.StreamingRecognizeRequest]:
            yield pb.StreamingRecognizeRequest(config=options.to_proto())
            if isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    yield pb.StreamingRecognizeRequest(audio=chunk)
            else:
                for chunk in chunks:
                    yield pb.StreamingRecognizeRequest(audio=chunk)

        call = self._stub.StreamingRecognize(
            requests(), timeout=timeout_s or self.stream_timeout_s, metadata=self._metadata
        )
        try:
            async for response in call:
                for update in StreamingUpdate.from_proto(response):
                    yield update
        except grpc.RpcError as error:
            raise RecognitionError.from_rpc_error(error) from None
        finally:
            call.cancel()  # no-op when finished; stops the call if the caller stopped iterating early

    async def list_models(self, *, timeout_s: float | None = None) -> list[ModelInfo]:
        response = await self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout_s)
        return [ModelInfo.from_proto(m) for m in response.models]

    async def health(self, service: str = "", *, timeout_s: float | None = None) -> str:
        """The grpc.health.v1 status name: SERVING, NOT_SERVING, or SERVICE_UNKNOWN."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = await self._call(self._health.Check, request, timeout_s)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    async def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return await method(request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as error:
            raise RecognitionError.from_rpc_error(error) from None
