"""Small single-purpose grpc.aio interceptors: request id + metrics + logs, bearer auth, error mapping.

Each one wraps the RPC's behaviour in an async context manager (:func:`_wrap` handles the four
call shapes), so servicer methods stay free of try/except ladders. :data:`STATUS_BY_ERROR` is the
one table from library errors to gRPC status codes.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import grpc
from grpc import aio

from asr.errors import AsrError, AudioError, CheckpointError, ConfigError, LimitExceeded
from server.metrics import ServerMetrics
from server.tokens import BearerTokens, Unauthenticated

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
_DEADLINE_SLACK_S = 0.1  # cancellations this close to the deadline count as DEADLINE_EXCEEDED
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# The one mapping from library errors to status codes (first match wins, so subclasses go first).
STATUS_BY_ERROR: tuple[tuple[type[AsrError], grpc.StatusCode], ...] = (
    (AudioError, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (CheckpointError, grpc.StatusCode.FAILED_PRECONDITION),
)

Around = Callable[[aio.ServicerContext, str], AbstractAsyncContextManager[None]]


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current RPC's id, or "-") to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def status_for(exc: BaseException) -> grpc.StatusCode:
    for error_type, code in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def record_call(metrics: ServerMetrics, method: str, code: grpc.StatusCode, elapsed_s: float, peer: str) -> None:
    """Count, time and log one finished call: gRPC RPCs and web requests alike."""
    metrics.requests.labels(method, code.name).inc()
    metrics.latency.labels(method).observe(elapsed_s)
    fields = {"method": method, "code": code.name, "duration_ms": round(elapsed_s * 1e3, 1), "peer": peer}
    logger.info("%s %s in %.1f ms", method, code.name, elapsed_s * 1e3, extra=fields)


async def _call(result: Any) -> Any:
    return await result if isinstance(result, Awaitable) else result


async def _iterate(result: Any) -> AsyncIterator[Any]:
    """Responses of a streaming behaviour, whether an async generator, a sync one, or a coroutine using write()."""
    if hasattr(result, "__aiter__"):
        async for response in result:
            yield response
    elif isinstance(result, Awaitable):
        await result
    else:
        for response in result:
            yield response


def _wrap(handler: grpc.RpcMethodHandler | None, method: str, around: Around) -> grpc.RpcMethodHandler | None:
    """The same handler with its behaviour run inside ``around(context, method)``."""
    if handler is None:
        return None
    codecs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary or handler.stream_unary:
        behaviour = handler.unary_unary or handler.stream_unary

        async def unary_response(request: Any, context: aio.ServicerContext) -> Any:
            async with around(context, method):
                return await _call(behaviour(request, context))

        make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return make(unary_response, **codecs)
    streaming = handler.unary_stream or handler.stream_stream

    async def stream_response(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        async with around(context, method):
            async for response in _iterate(streaming(request, context)):
                yield response

    make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    return make(stream_response, **codecs)


class ObservabilityInterceptor(aio.ServerInterceptor):
    """Outermost: gives each call a request id (the client's x-request-id or a new one), logs its
    outcome and counts it by status code, including calls the inner interceptors refuse."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        return _wrap(await continuation(details), details.method, self._observe)  # type: ignore[return-value]

    @asynccontextmanager
    async def _observe(self, context: aio.ServicerContext, method: str) -> AsyncIterator[None]:
        rid = dict(context.invocation_metadata() or ()).get(REQUEST_ID_HEADER) or uuid.uuid4().hex[:16]
        request_id.set(str(rid))
        context.set_trailing_metadata(((REQUEST_ID_HEADER, str(rid)),))
        name = method.rsplit("/", 1)[-1]
        # Read the call now: after a client cancels, context.peer() touches a freed call and crashes
        # the whole process (grpcio 1.85), so nothing below asks the context about the call again.
        peer, time_left_s = context.peer(), context.time_remaining()
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            yield
        except aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except BaseException:  # CancelledError included: the client went away or its deadline passed
            # A client whose deadline passes cancels the call by its own clock, which started before ours: its
            # cancellation can arrive a little before our deadline, so the last moments count as expiry too.
            expired = time_left_s is not None and time.perf_counter() - start >= time_left_s - _DEADLINE_SLACK_S
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        finally:
            record_call(self._metrics, name, code, time.perf_counter() - start, peer)


class AuthInterceptor(aio.ServerInterceptor):
    """Bearer tokens from ``authorization: Bearer <token>`` metadata; health checks stay open
    so load balancers and orchestrators can probe without a secret."""

    OPEN_PREFIXES = ("/grpc.health.v1.Health/",)

    def __init__(self, tokens: BearerTokens) -> None:
        self._tokens = tokens

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if details.method.startswith(self.OPEN_PREFIXES):
            return handler
        return _wrap(handler, details.method, self._authenticate)  # type: ignore[return-value]

    @asynccontextmanager
    async def _authenticate(self, context: aio.ServicerContext, method: str) -> AsyncIterator[None]:
        try:
            self._tokens.check_header(str(dict(context.invocation_metadata() or ()).get("authorization", "")))
        except Unauthenticated as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        yield


class ErrorInterceptor(aio.ServerInterceptor):
    """Innermost: turns library errors into status codes via :data:`STATUS_BY_ERROR`; anything
    unexpected becomes INTERNAL with the request id, and the traceback goes to the log, not the client."""

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        return _wrap(await continuation(details), details.method, self._map_errors)  # type: ignore[return-value]

    @asynccontextmanager
    async def _map_errors(self, context: aio.ServicerContext, method: str) -> AsyncIterator[None]:
        try:
            yield
        except AsrError as exc:
            await context.abort(status_for(exc), str(exc))
        except aio.AbortError:
            raise
        except Exception:
            logger.exception("unexpected error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error; request id {request_id.get()}")
