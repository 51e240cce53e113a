"""``--web-port``: the live-captions page, WebSocket streams and file uploads, in the gRPC server's process.

An aiohttp site on the same event loop as the grpc.aio server. It is a transport only: a WebSocket
stream becomes the ``asr.v1`` requests of :mod:`server.web_protocol` and runs through
:meth:`RecognizerServicer.stream` (same stream slots, idle and size limits, batcher and metrics as
gRPC streams), and a file upload runs through :meth:`RecognizerServicer.recognize`. Tokens are
checked by the same :class:`BearerTokens`; calls are counted and logged by the same
:func:`record_call` under the methods ``WebStream`` and ``WebRecognize``.

What only a WebSocket needs is handled here: a client that closes without ``stop`` (a closed tab)
cancels its stream like a cancelled gRPC call; results wait at most ``stream_idle_timeout_s`` for
a client that does not read them; frames over ``max_request_bytes`` close the socket with 1009.
On shutdown the site stops listening, open streams get the grace period to finish, then each is
told UNAVAILABLE and closed, as gRPC's graceful stop does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_websocket import WebSocketError

from asr.errors import ConfigError, LimitExceeded
from protos import asr_service_pb2 as pb
from server import web_protocol as protocol
from server.config import ServerConfig
from server.interceptors import REQUEST_ID_HEADER, record_call, request_id, status_for
from server.metrics import ServerMetrics
from server.servicer import RecognizerServicer
from server.tokens import BearerTokens, Unauthenticated

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# The page loads nothing from elsewhere; microphone audio and results only travel to this origin.
_CSP = "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'"
_CLOSE_TIMEOUT_S = 2.0  # how long a closing handshake may take before the connection is dropped


class ClientGone(Exception):
    """The client closed the WebSocket (or lost the connection) without ending its stream with ``stop``."""


class ShuttingDown(Exception):
    """The server stopped before the call finished (gRPC UNAVAILABLE)."""


def status_of(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status a failed web call reports: the same table as gRPC calls, plus the web's own cases."""
    if isinstance(exc, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(exc, (ClientGone, asyncio.CancelledError, ConnectionError)):
        return grpc.StatusCode.CANCELLED
    if isinstance(exc, ShuttingDown):
        return grpc.StatusCode.UNAVAILABLE
    return status_for(exc)  # AsrError subclasses by the one table; anything else INTERNAL


def _public_message(exc: BaseException, code: grpc.StatusCode) -> str:
    """What the client is told: library and auth messages say what to do; internals stay in the log."""
    if code == grpc.StatusCode.INTERNAL:
        return f"internal error; request id {request_id.get()}"
    return str(exc)


@dataclass
class _Call:
    """One web call being observed: its status, set by the handler before it returns."""

    code: grpc.StatusCode = grpc.StatusCode.OK


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str


class WebServer:
    """The page (``/``, ``/static/*``), ``/v1/info``, ``/v1/recognize`` and ``/v1/stream`` on ``cfg.web_port``."""

    def __init__(
        self,
        cfg: ServerConfig,
        core: RecognizerServicer,
        metrics: ServerMetrics,
        tokens: BearerTokens | None,
        info: dict[str, Any],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._cfg, self._core, self._metrics, self._tokens, self._info = cfg, core, metrics, tokens, info
        self._ssl_context = ssl_context
        self._assets = {p.name: _Asset(p.read_bytes(), _CONTENT_TYPES[p.suffix]) for p in STATIC_DIR.iterdir()}
        self._calls: set[asyncio.Task[Any]] = set()  # in-flight API calls, for the graceful stop
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None

    async def start(self) -> int:
        """Bind and serve; returns the port (``web_port`` 0 = any free port). OSError when it cannot bind."""
        app = web.Application(client_max_size=self._cfg.max_request_bytes)
        app.add_routes(
            [
                web.get("/", self._page),
                web.get("/static/{name}", self._asset),
                web.get("/v1/info", self._tracked("WebInfo", self._get_info)),
                web.post("/v1/recognize", self._tracked("WebRecognize", self._recognize)),
                web.get("/v1/stream", self._tracked("WebStream", self._stream)),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=_CLOSE_TIMEOUT_S)
        await self._runner.setup()
        # reuse_port: with --workers every process binds this port too, as gRPC does for its own.
        family = socket.AF_INET6 if ":" in self._cfg.host else socket.AF_INET
        try:
            sock = socket.create_server((self._cfg.host, self._cfg.web_port), family=family, reuse_port=True)
        except OSError:
            await self._runner.cleanup()
            raise
        self._site = web.SockSite(self._runner, sock, ssl_context=self._ssl_context)
        await self._site.start()
        return int(sock.getsockname()[1])

    async def stop(self, grace_s: float | None) -> None:
        """Stop listening, give open calls ``grace_s`` to finish, then end the rest with UNAVAILABLE."""
        self._closing = True
        if self._site is not None:
            await self._site.stop()
        in_flight = set(self._calls)
        if in_flight and grace_s:
            _, in_flight = await asyncio.wait(in_flight, timeout=grace_s)
        for task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.wait(in_flight, timeout=2 * _CLOSE_TIMEOUT_S)
        if self._runner is not None:
            await self._runner.cleanup()

    # --- page ------------------------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        return self._asset_response(self._assets["index.html"])

    async def _asset(self, request: web.Request) -> web.Response:
        asset = self._assets.get(request.match_info["name"])
        if asset is None or request.match_info["name"] == "index.html":
            raise web.HTTPNotFound(text="no such file")
        return self._asset_response(asset)

    @staticmethod
    def _asset_response(asset: _Asset) -> web.Response:
        headers = {"Content-Security-Policy": _CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers)

    # --- API calls: tracked for shutdown, observed for metrics and logs -----------------------------------

    def _tracked(
        self, method: str, handler: Callable[[web.Request, _Call], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:

        async def handle(request: web.Request) -> web.StreamResponse:
            task = asyncio.current_task()
            assert task is not None
            self._calls.add(task)
            try:
                with self._observed(method, request) as call:
                    return await handler(request, call)
            finally:
                self._calls.discard(task)

        return handle

    @contextmanager
    def _observed(self, method: str, request: web.Request) -> Iterator[_Call]:
        """A request id (the client's X-Request-Id or a new one), then the call counted and logged."""
        request_id.set(request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex[:16])
        call, start = _Call(), time.perf_counter()
        try:
            yield call
        except BaseException as exc:
            call.code = status_of(exc)
            raise
        finally:
            record_call(self._metrics, method, call.code, time.perf_counter() - start, str(request.remote))

    def _authenticate(self, request: web.Request, token: str = "") -> None:
        """The token of the start message, ``?token=`` (browsers cannot set WebSocket headers) or the header."""
        if self._tokens is None:
            return
        if token or "token" in request.query:
            self._tokens.check(token or request.query["token"])
        else:
            self._tokens.check_header(request.headers.get("Authorization", ""))

    def _check_open(self) -> None:
        if self._closing:
            raise ShuttingDown("the server is shutting down; retry on another replica")

    def _http_error(self, exc: BaseException, call: _Call) -> web.Response:
        call.code = status_of(exc)
        if call.code == grpc.StatusCode.INTERNAL:
            logger.exception("unexpected error in a web call", exc_info=exc)
        body = protocol.error_message(call.code, _public_message(exc, call.code), request_id.get())
        status = protocol.HTTP_STATUS.get(call.code, 500)
        return web.json_response(body, status=status, headers={REQUEST_ID_HEADER: request_id.get()})

    async def _get_info(self, request: web.Request, call: _Call) -> web.Response:
        try:
            self._check_open()
            self._authenticate(request)
        except (Unauthenticated, ShuttingDown) as exc:
            return self._http_error(exc, call)
        return web.json_response({**self._info, "auth_required": self._tokens is not None})

    async def _recognize(self, request: web.Request, call: _Call) -> web.Response:
        """A whole file in the body (WAV, FLAC, OGG, MP3): the unary path, words with times."""
        try:
            self._check_open()
            self._authenticate(request)
            try:
                audio = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise LimitExceeded(
                    f"the upload is over this server's {self._cfg.max_request_bytes} byte limit; "
                    "send a shorter or compressed file"
                ) from None
            config = pb.RecognitionConfig(enable_word_time_offsets=True, enable_word_confidence=True)
            response = await self._core.recognize(pb.RecognizeRequest(config=config, audio=audio))
        except Exception as exc:
            return self._http_error(exc, call)
        return web.json_response(protocol.transcript_message(response), headers={REQUEST_ID_HEADER: request_id.get()})

    # --- WebSocket streams ---------------------------------------------------------------------------------

    async def _stream(self, request: web.Request, call: _Call) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=self._cfg.max_request_bytes, autoclose=True)
        if not ws.can_prepare(request).ok:
            return self._http_error(ConfigError("/v1/stream is a WebSocket endpoint: open it as one"), call)
        await ws.prepare(request)
        try:
            self._check_open()
            responses = self._core.stream(self._requests(ws, request))
            async with aclosing(responses):
                async for response in responses:
                    for message in protocol.result_messages(response):
                        await self._send(ws, message)
            await self._close(ws, WSCloseCode.OK, "end of stream")
        except asyncio.CancelledError:
            if not self._closing:
                raise  # aiohttp cancelled the handler: the connection is gone
            await self._fail(ws, ShuttingDown("the server is shutting down; reconnect to start a new stream"), call)
        except Exception as exc:
            await self._fail(ws, exc, call)
        return ws

    async def _requests(
        self, ws: web.WebSocketResponse, request: web.Request
    ) -> AsyncIterator[pb.StreamingRecognizeRequest]:
        """The client's messages as ``asr.v1`` requests: config first, then audio, until ``stop``.

        The servicer times every wait for a message (idle and wall-time limits), as for gRPC streams.
        """
        first = await self._receive(ws)
        if first.type != WSMsgType.TEXT:
            raise ConfigError('the first message must be the JSON {"type": "start", ...}; audio frames come after it')
        start = protocol.parse_start(first.data)
        self._authenticate(request, start.token)
        yield pb.StreamingRecognizeRequest(config=start.config)
        # The servicer asks for more only after accepting the config and taking a stream slot.
        await self._send(ws, {"type": "ready", "request_id": request_id.get(), **self._info})
        while True:
            message = await self._receive(ws)
            if message.type == WSMsgType.BINARY:
                yield pb.StreamingRecognizeRequest(audio=message.data)
            elif protocol.is_stop(message.data):
                return

    async def _receive(self, ws: web.WebSocketResponse) -> Any:
        """The next text or binary message; ClientGone when the socket closed, LimitExceeded for a huge frame."""
        message = await ws.receive()
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            return message
        error = message.data if message.type == WSMsgType.ERROR else None
        if isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG:
            # aiohttp has already closed the socket with 1009 (Message Too Big): the status is for the metrics.
            raise LimitExceeded(f"a frame is over this server's {self._cfg.max_request_bytes} byte limit")
        raise ClientGone(f"the client closed the stream without stop (close code {ws.close_code})")

    async def _send(self, ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        """Send, waiting at most ``stream_idle_timeout_s`` for a client that does not read (its buffers full)."""
        try:
            async with asyncio.timeout(self._cfg.stream_idle_timeout_s):
                await ws.send_str(json.dumps(message))
        except TimeoutError:
            raise LimitExceeded(
                f"the client read no results for {self._cfg.stream_idle_timeout_s:g} s; read them as they come"
            ) from None
        except ConnectionError as exc:
            raise ClientGone(f"the connection was lost while sending: {exc}") from exc

    async def _fail(self, ws: web.WebSocketResponse, exc: BaseException, call: _Call) -> None:
        """Tell the client why its stream ended (an ``error`` message and close code 4000 + status), if it is there."""
        call.code = status_of(exc)
        if call.code == grpc.StatusCode.INTERNAL:
            logger.exception("unexpected error in a WebSocket stream", exc_info=exc)
        if call.code == grpc.StatusCode.CANCELLED or ws.closed:
            return
        message = protocol.error_message(call.code, _public_message(exc, call.code), request_id.get())
        with suppress(LimitExceeded, ClientGone):  # a client not reading or gone: closing is all that is left
            await self._send(ws, message)
        await self._close(ws, protocol.close_code(call.code), call.code.name)

    async def _close(self, ws: web.WebSocketResponse, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await ws.close(code=code, message=reason.encode())
        except (TimeoutError, ConnectionError):
            pass  # a client that does not answer the closing handshake: aiohttp drops the connection
