"""The web API (``--web-port``) over a real loopback server, with aiohttp's client: WebSocket streams
and file uploads must give the gRPC path's results, share its limits, slots, tokens and metrics, answer
every bad input with an ``error`` message and close code, and free the session when a client leaves.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import socket
import threading
import time
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

from asr.audio import load_audio
from asr.inference import Recognizer
from client import AsrClient, StreamOptions
from client.audio import chunk_pcm16, read_pcm16
from server.app import ServerThread
from server.config import ServerConfig

LIMITS = {
    "max_request_bytes": 200_000,
    "max_audio_s": 20.0,
    "max_stream_s": 4.0,
    "max_concurrent_streams": 2,
    "stream_idle_timeout_s": 1.0,  # so the idle cases end in about a second
}
TOKEN = "web-test-token"
Step = str | bytes | dict[str, Any] | float  # text, binary, JSON, or a pause in seconds


@pytest.fixture(scope="module")
def recognizer(tiny_model_path: Path) -> Recognizer:
    return Recognizer.from_checkpoint(tiny_model_path, device="cpu")


def _server(recognizer: Recognizer, model: Path, grace_s: float = 1.0, **settings: Any) -> ServerThread:
    limits = {**LIMITS, **settings}
    cfg = ServerConfig(host="127.0.0.1", port=0, metrics_port=0, web_port=0, model=str(model), **limits)
    return ServerThread(cfg, recognizer, grace_s=grace_s)


@pytest.fixture(scope="module")
def server(recognizer, tiny_model_path) -> Iterator[ServerThread]:
    with _server(recognizer, tiny_model_path) as running:
        yield running


@pytest.fixture(scope="module")
def known_paths(samples) -> list[Path]:
    """The shortest samples: the tiny model memorised them."""
    return [p for _, p in sorted(zip(samples.durations, samples.paths))][:4]


def metric(server: ServerThread, name: str, **labels: str) -> float:
    assert server.running is not None
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.running.metrics_port}/metrics", timeout=5).read().decode()
    found = (s for family in text_string_to_metric_families(text) for s in family.samples)
    return sum(s.value for s in found if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


@dataclass
class WebStream:
    """Everything a WebSocket client saw: the server's messages and how the socket was closed."""

    messages: list[dict[str, Any]]
    close_code: int | None

    @property
    def results(self) -> list[tuple[bool, str]]:
        return [(m["is_final"], m["text"]) for m in self.messages if m["type"] == "result"]

    @property
    def error(self) -> dict[str, Any]:
        errors = [m for m in self.messages if m["type"] == "error"]
        assert len(errors) == 1, self.messages
        return errors[0]


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> WebStream:
    """Read until the server closes; the close code is the one in its close frame (aiohttp's own
    ``close_code`` turns into 1006 when the server drops the connection before the client's reply)."""
    messages = []
    while True:
        message = await ws.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            messages.append(json.loads(message.data))
        elif message.type == aiohttp.WSMsgType.CLOSE:
            return WebStream(messages, int(message.data))
        else:
            return WebStream(messages, ws.close_code)


async def _run_stream(url: str, steps: list[Step], headers: dict[str, str] | None = None) -> WebStream:
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers, max_msg_size=0) as ws:
        for step in steps:
            try:
                if isinstance(step, float):
                    await asyncio.sleep(step)
                elif isinstance(step, dict):
                    await ws.send_str(json.dumps(step))
                elif isinstance(step, str):
                    await ws.send_str(step)
                else:
                    await ws.send_bytes(step)
            except ConnectionResetError:
                break  # the server has already closed the stream (the error is read below)
        return await _drain(ws)


def web_stream(server: ServerThread, steps: list[Step], query: str = "", **headers: str) -> WebStream:
    url = server.web_url.replace("http://", "ws://") + "/v1/stream" + query
    return asyncio.run(_run_stream(url, steps, headers))


def start(rate: int, **options: Any) -> dict[str, Any]:
    return {"type": "start", "sample_rate_hz": rate, **options}


STOP = {"type": "stop"}


def pcm_steps(path: Path, chunk_ms: int = 100) -> tuple[int, list[Step]]:
    pcm, rate = read_pcm16(path)
    return rate, list(chunk_pcm16(pcm, rate, chunk_ms))


def grpc_stream(server: ServerThread, path: Path, **options: Any) -> list[tuple[bool, str]]:
    pcm, rate = read_pcm16(path)
    with AsrClient(server.address, timeout_s=20) as client:
        updates = client.stream(chunk_pcm16(pcm, rate, 100), StreamOptions(sample_rate_hz=rate, **options))
        return [(u.is_final, u.text) for u in updates]


def assert_serving(server: ServerThread, path: Path) -> None:
    rate, chunks = pcm_steps(path)
    assert web_stream(server, [start(rate), *chunks, STOP]).close_code == 1000


# --- results ------------------------------------------------------------------------------------------


def test_a_websocket_stream_gives_the_grpc_streams_partials_and_finals(server, known_paths):
    partials = 0
    for path in known_paths:
        rate, chunks = pcm_steps(path)
        got = web_stream(server, [start(rate), *chunks, STOP])
        assert got.close_code == 1000
        assert got.results == grpc_stream(server, path)  # same partials and finals, same order
        ready = got.messages[0]
        assert ready["type"] == "ready" and ready["request_id"] and ready["sample_rate_hz"] == 16000
        finals = [m for m in got.messages if m["type"] == "result" and m["is_final"]]
        assert finals and all(m["stability"] == 1.0 and m["end_s"] > m["start_s"] >= 0 for m in finals)
        partials += sum(not final for final, _ in got.results)
    assert partials > 0


def test_start_options_reach_the_stream(server, known_paths):
    rate, chunks = pcm_steps(known_paths[-1])
    got = web_stream(server, [start(rate, interim_results=False, word_times=True, method="ctc_greedy"), *chunks, STOP])
    assert got.results and all(final for final, _ in got.results)
    words = [w for m in got.messages if m["type"] == "result" for w in m["words"]]
    assert words and all(0 <= w["start_s"] <= w["end_s"] and 0 <= w["confidence"] <= 1 for w in words)


def test_a_file_upload_gives_the_recognize_transcript(server, known_paths):
    with AsrClient(server.address, timeout_s=20) as client:
        expected = [client.transcribe(p) for p in known_paths]

    async def upload(path: Path) -> tuple[int, dict[str, Any]]:
        url = server.web_url + "/v1/recognize"
        async with aiohttp.ClientSession() as http, http.post(url, data=path.read_bytes()) as response:
            return response.status, await response.json()

    for path, want in zip(known_paths, expected):
        status, body = asyncio.run(upload(path))
        assert status == 200 and body["text"] == want.text and body["request_id"]
        assert [w["word"] for w in body["words"]] == [w.word for w in want.words]
        assert body["duration_s"] == pytest.approx(want.duration_s, abs=1e-3)


def test_the_page_and_its_assets_are_served_with_a_strict_content_policy(server):
    with urllib.request.urlopen(server.web_url + "/", timeout=5) as page:
        html = page.read().decode()
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for asset in ("app.js", "capture.js", "style.css"):
        assert f"static/{asset}" in html or asset == "capture.js"
        with urllib.request.urlopen(f"{server.web_url}/static/{asset}", timeout=5) as response:
            assert response.status == 200 and response.read()
    assert "http" not in html.replace("http-equiv", "")  # nothing is loaded from elsewhere
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.web_url + "/static/../config.py", timeout=5)
    assert info.value.code == 404


# --- bad input: the gRPC path's status codes, as error messages and close codes -----------------------


def _wav_bytes(path: Path) -> bytes:
    wave = load_audio(path, 16000)
    buffer = io.BytesIO()
    sf.write(buffer, wave, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


BAD_STREAMS: dict[str, tuple[Callable[[int, list[Step], Path], list[Step]], str]] = {
    "audio before start": (lambda rate, chunks, path: [*chunks, STOP], "INVALID_ARGUMENT"),
    "a start that is not JSON": (lambda rate, chunks, path: ["start 16000", *chunks], "INVALID_ARGUMENT"),
    "an unknown start field": (lambda rate, chunks, path: [start(rate, sample_rate=rate)], "INVALID_ARGUMENT"),
    "a start field of the wrong type": (lambda rate, chunks, path: [start(rate, endpointing=1)], "INVALID_ARGUMENT"),
    "no sample rate": (lambda rate, chunks, path: [{"type": "start"}, *chunks, STOP], "INVALID_ARGUMENT"),
    "an absurd sample rate": (lambda rate, chunks, path: [start(10_000_000), *chunks, STOP], "INVALID_ARGUMENT"),
    "a method that cannot stream": (lambda rate, chunks, path: [start(rate, method="joint")], "INVALID_ARGUMENT"),
    "half a sample": (lambda rate, chunks, path: [start(rate), b"\x00"], "INVALID_ARGUMENT"),
    "a WAV file instead of PCM": (lambda rate, chunks, path: [start(16000), _wav_bytes(path)], "INVALID_ARGUMENT"),
    "PCM sent as text": (lambda rate, chunks, path: [start(rate), "AAAAAA=="], "INVALID_ARGUMENT"),
    "start twice": (lambda rate, chunks, path: [start(rate), start(rate)], "INVALID_ARGUMENT"),
    "an unknown control message": (lambda rate, chunks, path: [start(rate), {"type": "pause"}], "INVALID_ARGUMENT"),
    "more audio than max_stream_s": (
        lambda rate, chunks, path: [start(16000)] + [b"\x00" * 32000] * int(LIMITS["max_stream_s"] + 2),
        "RESOURCE_EXHAUSTED",
    ),
    "no start within the idle timeout": (lambda rate, chunks, path: [3.0], "RESOURCE_EXHAUSTED"),
    "silence after start": (lambda rate, chunks, path: [start(rate), chunks[0], 3.0], "RESOURCE_EXHAUSTED"),
}


@pytest.mark.parametrize("case", list(BAD_STREAMS))
def test_bad_streams_get_the_grpc_status_as_an_error_and_close_code(case, server, known_paths):
    make, code = BAD_STREAMS[case]
    rate, chunks = pcm_steps(known_paths[0])
    before = metric(server, "asr_requests_total", method="WebStream", code=code)
    started = time.monotonic()
    got = web_stream(server, make(rate, chunks, known_paths[0]))
    assert got.error["code"] == code and got.error["message"] and got.error["request_id"]
    assert got.close_code == 4000 + {"INVALID_ARGUMENT": 3, "RESOURCE_EXHAUSTED": 8}[code]
    assert time.monotonic() - started < 6
    assert wait_for(lambda: metric(server, "asr_requests_total", method="WebStream", code=code) == before + 1)
    assert metric(server, "asr_active_streams") == 0
    assert_serving(server, known_paths[0])


def test_an_oversized_frame_closes_with_1009_and_counts_as_resource_exhausted(server, known_paths):
    before = metric(server, "asr_requests_total", method="WebStream", code="RESOURCE_EXHAUSTED")
    got = web_stream(server, [start(16000), b"\x00" * (LIMITS["max_request_bytes"] + 2)])
    assert got.close_code == 1009  # Message Too Big: the frame is refused from its header, never buffered
    labels = {"method": "WebStream", "code": "RESOURCE_EXHAUSTED"}
    assert wait_for(lambda: metric(server, "asr_requests_total", **labels) > before)
    assert_serving(server, known_paths[0])


def test_an_oversized_upload_is_refused(server):
    request = urllib.request.Request(server.web_url + "/v1/recognize", data=b"\x00" * (LIMITS["max_request_bytes"] + 1))
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 429 and json.loads(info.value.read())["code"] == "RESOURCE_EXHAUSTED"
    corrupt = urllib.request.Request(server.web_url + "/v1/recognize", data=b"RIFF\x00\x00junk" * 10)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(corrupt, timeout=10)
    assert info.value.code == 400 and json.loads(info.value.read())["code"] == "INVALID_ARGUMENT"


def test_websocket_and_grpc_streams_share_the_concurrency_limit(server, known_paths):
    pcm, rate = read_pcm16(known_paths[0])
    release = threading.Event()

    def held() -> Iterator[bytes]:
        yield pcm
        while not release.wait(0.2):  # a little silence now and then: the idle timeout is 1 s
            yield b"\x00" * 320

    def hold() -> None:
        with AsrClient(server.address, timeout_s=30) as client:
            list(client.stream(held(), StreamOptions(sample_rate_hz=rate, endpointing=False)))

    holders = [threading.Thread(target=hold) for _ in range(LIMITS["max_concurrent_streams"])]
    for holder in holders:
        holder.start()
    try:
        assert wait_for(lambda: metric(server, "asr_active_streams") == LIMITS["max_concurrent_streams"])
        got = web_stream(server, [start(rate), pcm, STOP])
        assert got.error["code"] == "RESOURCE_EXHAUSTED" and "streams are open" in got.error["message"]
    finally:
        release.set()
        for holder in holders:
            holder.join()
    assert wait_for(lambda: metric(server, "asr_active_streams") == 0)


# --- clients that leave ---------------------------------------------------------------------------------


def _frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455 §5.2), written by hand so the client can vanish without a goodbye."""
    size = len(payload)
    length = bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + size.to_bytes(2, "big")
    mask = np.frombuffer(b"\x12\x34\x56\x78", dtype=np.uint8)
    masked = np.frombuffer(payload, dtype=np.uint8) ^ np.resize(mask, size)
    return bytes([0x80 | opcode]) + length + mask.tobytes() + masked.tobytes()


def _vanish(server: ServerThread, rate: int, chunks: list[Step]) -> None:
    """Open a stream over a raw socket, wait for "ready", then reset the connection: no close frame, no stop."""
    assert server.running is not None and server.running.web_port is not None
    with socket.create_connection(("127.0.0.1", server.running.web_port), timeout=10) as sock:
        sock.sendall(
            b"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(_frame(0x1, json.dumps(start(rate)).encode()))
        for chunk in chunks * 3:
            sock.sendall(_frame(0x2, chunk))  # type: ignore[arg-type]
        received = b""
        while b'"ready"' not in received:
            received += sock.recv(4096)
        assert received.startswith(b"HTTP/1.1 101")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))


async def _close_tab(url: str, rate: int, chunks: list[Step]) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(json.dumps(start(rate)))
        for chunk in chunks * 3:
            await ws.send_bytes(chunk)  # type: ignore[arg-type]
        assert json.loads((await ws.receive()).data)["type"] == "ready"
    # Leaving the block closes the socket with a close frame and no "stop", as a browser closing the tab does.


@pytest.mark.parametrize("how", ["close", "abort"])
def test_a_client_leaving_mid_stream_frees_its_session(how, server, recognizer, known_paths, monkeypatch):
    sessions: list[weakref.ref] = []
    open_stream = recognizer.open_stream

    def tracked(*args: Any, **kwargs: Any) -> Any:
        session = open_stream(*args, **kwargs)
        sessions.append(weakref.ref(session))
        return session

    monkeypatch.setattr(recognizer, "open_stream", tracked)
    before = metric(server, "asr_requests_total", method="WebStream", code="CANCELLED")
    rate, chunks = pcm_steps(known_paths[0])
    url = server.web_url.replace("http://", "ws://") + "/v1/stream"
    for _ in range(2):
        if how == "close":
            asyncio.run(_close_tab(url, rate, chunks))
        else:
            _vanish(server, rate, chunks)
    assert wait_for(lambda: metric(server, "asr_requests_total", method="WebStream", code="CANCELLED") == before + 2)
    assert wait_for(lambda: metric(server, "asr_active_streams") == 0)
    assert wait_for(lambda: gc.collect() >= 0 and all(ref() is None for ref in sessions))
    assert len(sessions) == 2
    assert_serving(server, known_paths[0])


# --- tokens ------------------------------------------------------------------------------------------------


def test_streams_and_uploads_need_the_grpc_token_in_one_of_three_places(
    recognizer, tiny_model_path, tmp_path, known_paths
):
    (tmp_path / "tokens.txt").write_text(f"{TOKEN}\n")
    rate, chunks = pcm_steps(known_paths[0])
    with _server(recognizer, tiny_model_path, tokens_file=str(tmp_path / "tokens.txt")) as server:
        for query, options, headers in [("", {}, {}), ("?token=wrong", {}, {}), ("", {"token": "wrong"}, {})]:
            got = web_stream(server, [start(rate, **options), *chunks, STOP], query, **headers)
            assert (got.error["code"], got.close_code) == ("UNAUTHENTICATED", 4016)
        accepted = [
            ("?token=" + TOKEN, {}, {}),
            ("", {"token": TOKEN}, {}),
            ("", {}, {"Authorization": f"Bearer {TOKEN}"}),
        ]
        for query, options, headers in accepted:
            got = web_stream(server, [start(rate, **options), *chunks, STOP], query, **headers)
            assert got.close_code == 1000 and got.results, got.messages
        upload = urllib.request.Request(server.web_url + "/v1/recognize", data=known_paths[0].read_bytes())
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(upload, timeout=10)
        assert info.value.code == 401 and json.loads(info.value.read())["code"] == "UNAUTHENTICATED"
        upload.add_header("Authorization", f"Bearer {TOKEN}")
        assert json.loads(urllib.request.urlopen(upload, timeout=10).read())["text"]
        assert urllib.request.urlopen(server.web_url + "/", timeout=5).status == 200  # the page itself is open


# --- graceful shutdown -----------------------------------------------------------------------------------


def test_shutdown_lets_an_open_stream_finish_then_refuses_new_ones(server, recognizer, tiny_model_path, known_paths):
    rate, chunks = pcm_steps(known_paths[0])
    expected = web_stream(server, [start(rate), *chunks, STOP]).results
    stopping = _server(recognizer, tiny_model_path, grace_s=10.0, stream_idle_timeout_s=10.0).start()
    url = stopping.web_url.replace("http://", "ws://") + "/v1/stream"
    stopper = threading.Thread(target=stopping.stop)

    async def stream_across_the_stop() -> WebStream:
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_str(json.dumps(start(rate)))
            half = len(chunks) // 2
            for chunk in chunks[:half]:
                await ws.send_bytes(chunk)  # type: ignore[arg-type]
            stopper.start()  # SIGTERM's path: ServerThread.stop → RunningServer.stop(grace 10 s)
            await asyncio.sleep(0.3)
            with pytest.raises(aiohttp.ClientConnectorError):  # no longer listening
                await http.ws_connect(url)
            for chunk in chunks[half:]:
                await ws.send_bytes(chunk)  # type: ignore[arg-type]
            await ws.send_str(json.dumps(STOP))
            return await _drain(ws)

    try:
        got = asyncio.run(stream_across_the_stop())
    finally:
        stopper.join(30)
    assert got.close_code == 1000 and got.results == expected  # finished within the grace period
    assert not stopper.is_alive()


def test_a_stream_still_open_after_the_grace_period_is_told_unavailable(recognizer, tiny_model_path, known_paths):
    rate, chunks = pcm_steps(known_paths[0])
    server = _server(recognizer, tiny_model_path, stream_idle_timeout_s=10.0).start()
    url = server.web_url.replace("http://", "ws://") + "/v1/stream"

    async def outlive_the_grace_period() -> WebStream:
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_str(json.dumps(start(rate)))
            await ws.send_bytes(chunks[0])  # type: ignore[arg-type]
            await asyncio.to_thread(server.stop)  # grace 1 s: the stream sends nothing more
            return await _drain(ws)

    got = asyncio.run(outlive_the_grace_period())
    assert got.error["code"] == "UNAVAILABLE" and got.close_code == 4014


def test_a_taken_web_port_is_a_clear_config_error(recognizer, tiny_model_path):
    from asr.errors import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = ServerConfig(host="127.0.0.1", port=0, metrics_port=-1, web_port=port, model=str(tiny_model_path))
        with pytest.raises(ConfigError, match="cannot serve the web page"):
            ServerThread(cfg, recognizer).start()


def test_streams_are_counted_in_the_shared_metrics(server, known_paths):
    before_ok = metric(server, "asr_requests_total", method="WebStream", code="OK")
    before_audio = metric(server, "asr_audio_seconds_total", method="StreamingRecognize")
    assert_serving(server, known_paths[0])
    assert wait_for(lambda: metric(server, "asr_requests_total", method="WebStream", code="OK") == before_ok + 1)
    assert metric(server, "asr_audio_seconds_total", method="StreamingRecognize") > before_audio
    assert metric(server, "asr_request_latency_seconds_count", method="WebStream") > 0
    assert np.isclose(metric(server, "asr_active_streams"), 0)


def test_a_plain_http_request_to_the_stream_endpoint_is_a_clear_400(server):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.web_url + "/v1/stream", timeout=5)
    body = json.loads(info.value.read())
    assert info.value.code == 400 and body["code"] == "INVALID_ARGUMENT" and "WebSocket" in body["message"]
