"""``asr.v1.Recognizer``: validate → convert → batcher or stream session → convert back.

:meth:`RecognizerServicer.recognize` and :meth:`RecognizerServicer.stream` hold the two paths
without any gRPC context, so other transports (the web page's WebSocket, the drop-in Riva and
Google APIs) run exactly the same limits, batching and metrics by building ``asr.v1`` messages.

No tensor code and no error handling here: library errors propagate to the ErrorInterceptor,
which owns the status-code table. CPU-heavy decoding of uploaded containers runs in a worker
thread so the event loop keeps serving other calls.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager

import numpy as np
from grpc import aio

from asr.errors import ConfigError, LimitExceeded
from asr.inference import Recognizer
from asr.streaming import StreamingResult, StreamingSession
from protos import asr_service_pb2 as pb
from protos import asr_service_pb2_grpc as pb_grpc
from server import convert
from server.batcher import DynamicBatcher
from server.config import ServerConfig
from server.interceptors import request_id
from server.metrics import ServerMetrics


class RecognizerServicer(pb_grpc.RecognizerServicer):
    def __init__(
        self,
        recognizer: Recognizer,
        batcher: DynamicBatcher,
        cfg: ServerConfig,
        metrics: ServerMetrics,
        model_name: str,
    ) -> None:
        self._recognizer = recognizer
        self._batcher = batcher
        self._cfg = cfg
        self._metrics = metrics
        self._model_name = model_name
        self._active_streams = 0

    async def Recognize(self, request: pb.RecognizeRequest, context: aio.ServicerContext) -> pb.RecognizeResponse:
        return await self.recognize(request)

    def StreamingRecognize(
        self, request_iterator: AsyncIterator[pb.StreamingRecognizeRequest], context: aio.ServicerContext
    ) -> AsyncGenerator[pb.StreamingRecognizeResponse, None]:
        return self.stream(request_iterator)

    async def recognize(self, request: pb.RecognizeRequest) -> pb.RecognizeResponse:
        """The unary path, for any transport (gRPC and its drop-in APIs, the web page's file drop)."""
        start = time.perf_counter()
        config = request.config
        self._check_model(config.model)
        search = convert.search_config(config, self._recognizer.search_config, self._cfg)
        waveform = await asyncio.to_thread(
            convert.decode_audio, config, request.audio, self._recognizer.sample_rate, self._cfg.max_audio_s
        )
        transcript = await asyncio.wrap_future(self._batcher.submit_recognize(waveform, search))
        response = convert.recognize_response(transcript, config)
        elapsed = time.perf_counter() - start
        response.processing_time_ms = elapsed * 1e3
        response.request_id = request_id.get()
        self._metrics.audio_seconds.labels("Recognize").inc(transcript.duration_s)
        self._metrics.real_time_factor.observe(elapsed / max(transcript.duration_s, 1e-3))
        return response

    async def stream(
        self, request_iterator: AsyncIterator[pb.StreamingRecognizeRequest]
    ) -> AsyncGenerator[pb.StreamingRecognizeResponse, None]:
        """The streaming path, for any transport (gRPC and its drop-in APIs, WebSockets): one stream slot,
        the idle and size limits, and chunk steps through the shared batcher."""
        requests = self._guarded(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("request") != "config":
            raise ConfigError("the first StreamingRecognizeRequest must carry `config`; audio comes after it")
        config = first.config.config
        self._check_model(config.model)
        options = convert.streaming_options(first.config, self._recognizer.search_config, self._cfg)
        rate, channels = convert.linear16_format(config)
        with self._stream_slot():
            session = self._recognizer.open_stream(options)
            pcm = convert.PcmStream(rate, self._recognizer.sample_rate, channels)
            async for request in requests:
                if request.WhichOneof("request") != "audio":
                    raise ConfigError("`config` may only be sent once, in the first message; send audio now")
                arrival = time.perf_counter()
                self._push(session, pcm.push(request.audio))
                while session.ready():
                    results = await asyncio.wrap_future(self._batcher.submit_step(session))
                    for response in self._responses(results, config, arrival):
                        yield response
            arrival = time.perf_counter()
            self._push(session, pcm.flush())
            results = await asyncio.wrap_future(self._batcher.submit_finish(session))
            for response in self._responses(results, config, arrival):
                yield response

    async def _guarded(
        self, request_iterator: AsyncIterator[pb.StreamingRecognizeRequest]
    ) -> AsyncIterator[pb.StreamingRecognizeRequest]:
        """The stream's messages, cut (LimitExceeded) after ``stream_idle_timeout_s`` without one, after
        ``max_stream_messages`` of them, or after ``max_stream_s + stream_idle_timeout_s`` of wall time.

        Only the wait for the client's next message is timed, never the server's own processing.
        """
        idle_s, cfg = self._cfg.stream_idle_timeout_s, self._cfg
        closes_at = time.monotonic() + cfg.max_stream_s + idle_s
        iterator = aiter(request_iterator)
        for count in itertools.count(1):
            timeout_s = min(idle_s, closes_at - time.monotonic())
            try:
                async with asyncio.timeout(max(timeout_s, 0.0)):  # no Task per message, unlike wait_for
                    request = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise LimitExceeded(
                    f"no message for {idle_s:g} s or the stream outlived its {cfg.max_stream_s + idle_s:g} s; "
                    "send audio at least in real time (silence counts), or open a new stream"
                ) from None
            if count > cfg.max_stream_messages:
                raise LimitExceeded(
                    f"the stream passed {cfg.max_stream_messages} messages, this server's limit; send larger chunks"
                )
            yield request

    async def ListModels(self, request: pb.ListModelsRequest, context: aio.ServicerContext) -> pb.ListModelsResponse:
        cfg, recognizer = self._cfg, self._recognizer
        methods = ["ctc_greedy", "ctc_prefix_beam"]
        if recognizer.model.decoder is not None:
            methods += ["attention_beam", "joint", "rescoring"]
        by_name = {name: number for number, name in convert.METHODS.items()}
        info = pb.ModelInfo(
            name=self._model_name,
            is_default=True,
            sample_rate_hz=recognizer.sample_rate,
            search_methods=[by_name[m] for m in methods],  # type: ignore[misc]
            max_beam_size=cfg.max_beam_size,
            max_alternatives=cfg.max_alternatives,
            max_phrase_hints=cfg.max_phrase_hints,
            max_audio_s=cfg.max_audio_s,
            max_stream_s=cfg.max_stream_s,
            max_request_bytes=cfg.max_request_bytes,
            max_concurrent_streams=cfg.max_concurrent_streams,
            device=str(recognizer.device),
        )
        return pb.ListModelsResponse(models=[info])

    def _check_model(self, name: str) -> None:
        if name and name != self._model_name:
            raise ConfigError(f"unknown model {name!r}; this server serves {self._model_name!r} (see ListModels)")

    def _push(self, session: StreamingSession, samples: np.ndarray) -> None:
        seconds = len(samples) / self._recognizer.sample_rate
        if session.audio_seconds + seconds > self._cfg.max_stream_s:
            raise LimitExceeded(
                f"the stream passed {self._cfg.max_stream_s:g} s of audio, this server's limit; open a new stream"
            )
        session.push(samples)
        self._metrics.audio_seconds.labels("StreamingRecognize").inc(seconds)

    @contextmanager
    def _stream_slot(self) -> Iterator[None]:
        """Counts an open stream for the concurrency limit and the active-streams gauge."""
        if self._active_streams >= self._cfg.max_concurrent_streams:
            raise LimitExceeded(
                f"{self._active_streams} streams are open, this server's limit; retry later or on another replica"
            )
        self._active_streams += 1
        self._batcher.open_streams = self._active_streams
        self._metrics.active_streams.inc()
        try:
            yield
        finally:
            self._active_streams -= 1
            self._batcher.open_streams = self._active_streams
            self._metrics.active_streams.dec()

    def _responses(
        self, results: list[StreamingResult], config: pb.RecognitionConfig, arrival: float
    ) -> list[pb.StreamingRecognizeResponse]:
        latency_s = time.perf_counter() - arrival
        responses = []
        for result in results:
            self._metrics.result_latency.labels("final" if result.is_final else "partial").observe(latency_s)
            responses.append(
                pb.StreamingRecognizeResponse(
                    results=[convert.streaming_result(result, config)],
                    processing_latency_ms=latency_s * 1e3,
                    request_id=request_id.get(),
                )
            )
        return responses

