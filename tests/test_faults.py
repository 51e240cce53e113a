"""Faults a long-running server must survive: clients vanishing mid-stream, a model that throws,
a full batch queue, and calls without credentials, against real loopback servers."""

from __future__ import annotations

import gc
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client.parser import text_string_to_metric_families

from asr.inference import Recognizer
from client import AsrClient, RecognitionError, StreamOptions
from client.audio import chunk_pcm16, read_pcm16
from protos import asr_service_pb2 as pb
from server.app import ServerThread
from server.config import ServerConfig

TOKEN = "fault-test-token"


@pytest.fixture(scope="module")
def recognizer(tiny_model_path: Path) -> Recognizer:
    return Recognizer.from_checkpoint(tiny_model_path, device="cpu")


@pytest.fixture(scope="module")
def sample(samples) -> Path:
    return min(zip(samples.durations, samples.paths))[1]


def _server(recognizer: Recognizer, model: Path, **settings: Any) -> ServerThread:
    cfg = ServerConfig(host="127.0.0.1", port=0, metrics_port=0, model=str(model), **settings)
    return ServerThread(cfg, recognizer)


@pytest.fixture(scope="module")
def server(recognizer, tiny_model_path) -> Iterator[ServerThread]:
    with _server(recognizer, tiny_model_path) as running:
        yield running


def metric(server: ServerThread, name: str, **labels: str) -> float:
    assert server.running is not None
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.running.metrics_port}/metrics", timeout=5).read().decode()
    samples = (s for f in text_string_to_metric_families(text) for s in f.samples)
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


# --- clients that go away mid-stream ---------------------------------------------------------------


def _leave(how: str, client: AsrClient, sample: Path) -> None:
    """Open a stream, get a partial result, then leave the way ``how`` says, mid-stream."""
    pcm, rate = read_pcm16(sample)
    hold = threading.Event()

    def chunks() -> Iterator[bytes]:
        yield from chunk_pcm16(pcm * 4, rate, 100)  # long enough for a partial result
        hold.wait(20)  # the stream stays open: the server is waiting for more audio

    updates = client.stream(chunks(), StreamOptions(sample_rate_hz=rate), timeout_s=1 if how == "deadline" else None)
    try:
        if how == "cancel":
            next(updates)
            threading.Timer(0.5, hold.set).start()  # gRPC waits for the request thread once the call is cancelled
            updates.close()  # breaking out of the loop: the client cancels the call
        elif how == "disconnect":
            next(updates)
            threading.Timer(0.5, hold.set).start()
            client.close()  # the channel goes away under the open call
            with pytest.raises(RecognitionError):
                list(updates)
        else:
            with pytest.raises(RecognitionError) as info:
                list(updates)
            assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        hold.set()


@pytest.mark.parametrize("how", ["cancel", "disconnect", "deadline"])
def test_a_client_leaving_mid_stream_frees_its_session(how, server, recognizer, sample, monkeypatch):
    sessions: list[weakref.ref] = []
    open_stream = recognizer.open_stream

    def tracked(*args: Any, **kwargs: Any) -> Any:
        session = open_stream(*args, **kwargs)
        sessions.append(weakref.ref(session))
        return session

    monkeypatch.setattr(recognizer, "open_stream", tracked)
    code = "DEADLINE_EXCEEDED" if how == "deadline" else "CANCELLED"
    ended = metric(server, "asr_requests_total", method="StreamingRecognize", code=code)
    for _ in range(3):
        with AsrClient(server.address, timeout_s=10, max_attempts=1) as client:
            _leave(how, client, sample)
    assert wait_for(lambda: metric(server, "asr_active_streams") == 0)
    # The status is counted by the interceptor after the handler has left its stream slot: wait for it too.
    assert wait_for(lambda: metric(server, "asr_requests_total", method="StreamingRecognize", code=code) == ended + 3)
    assert wait_for(lambda: gc.collect() >= 0 and all(ref() is None for ref in sessions))
    assert len(sessions) == 3
    with AsrClient(server.address, timeout_s=10) as client:
        assert client.transcribe(sample).text


# --- an exception inside the model worker ------------------------------------------------------------


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("simulated CUDA error: an illegal memory access was encountered")


def test_a_model_exception_fails_only_that_call_with_internal_and_a_request_id(server, recognizer, sample, monkeypatch):
    pcm, rate = read_pcm16(sample)
    with AsrClient(server.address, timeout_s=10, max_attempts=1) as client:
        expected = client.transcribe(sample).text
        with monkeypatch.context() as patch:
            patch.setattr(recognizer, "transcribe_batch", _boom)
            patch.setattr("server.batcher.step_batch", _boom)
            patch.setattr("server.batcher.finish_batch", _boom)
            for call in (lambda: client.transcribe(sample), lambda: list(client.stream([pcm], StreamOptions(rate)))):
                with pytest.raises(RecognitionError) as info:
                    call()
                error = info.value
                assert error.code == grpc.StatusCode.INTERNAL
                assert error.request_id and error.request_id in error.message
                assert "CUDA" not in error.message  # details go to the log, not to the client
        assert client.transcribe(sample).text == expected
        finals = [u.text for u in client.stream([pcm], StreamOptions(rate)) if u.is_final]
        assert " ".join(finals) == expected
    assert metric(server, "asr_active_streams") == 0


# --- a full batch queue --------------------------------------------------------------------------------


def test_a_full_queue_refuses_promptly_and_queued_work_still_completes(
    recognizer, tiny_model_path, sample, monkeypatch
):
    entered, release = threading.Event(), threading.Event()
    transcribe_batch = recognizer.transcribe_batch

    def stuck(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(30)
        return transcribe_batch(*args, **kwargs)

    monkeypatch.setattr(recognizer, "transcribe_batch", stuck)
    # No warm-up: it would call the stuck transcribe_batch itself, and `entered` would not mean the first call.
    settings = {"max_queue_size": 1, "max_batch_size": 1, "max_batch_delay_ms": 0, "warm_up": False}
    with _server(recognizer, tiny_model_path, **settings) as server, AsrClient(server.address, timeout_s=30) as client:
        results: list[str] = []
        callers = [threading.Thread(target=lambda: results.append(client.transcribe(sample).text)) for _ in range(2)]
        try:
            callers[0].start()
            assert entered.wait(10)  # the model thread is busy with the first call
            callers[1].start()
            assert wait_for(lambda: metric(server, "asr_batcher_queue_depth") == 1)  # the second fills the queue
            pcm, rate = read_pcm16(sample)
            for call in (lambda: client.transcribe(sample), lambda: list(client.stream([pcm], StreamOptions(rate)))):
                start = time.monotonic()
                with pytest.raises(RecognitionError) as info:
                    call()
                assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() - start < 2.0
        finally:
            release.set()
            for caller in callers:
                caller.join(30)
        assert len(results) == 2 and results[0] == results[1] and results[0]  # nothing queued was lost
        assert wait_for(lambda: metric(server, "asr_active_streams") == 0)


# --- authentication on every RPC ----------------------------------------------------------------------


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the token to every call (the reflection client has no metadata argument)."""

    def _with_token(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), ("authorization", f"Bearer {TOKEN}")])

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._with_token(client_call_details), request)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._with_token(client_call_details), request_iterator)


def _every_method(address: str) -> list[tuple[str, bool, bool]]:
    """(path, client_streaming, server_streaming) of every method the server lists by reflection,
    plus this project's own service, so a new RPC cannot slip past the check."""
    with grpc.intercept_channel(grpc.insecure_channel(address), _Bearer()) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = DescriptorPool(database)
        services = {*database.get_services(), pb.DESCRIPTOR.services_by_name["Recognizer"].full_name}
        found = [pool.FindServiceByName(name) for name in sorted(services)]
    listed = [(f"/{s.full_name}/{m.name}", m.client_streaming, m.server_streaming) for s in found for m in s.methods]
    return listed + COMPAT_METHODS


# The drop-in Riva and Google services carry no service descriptors (they are registered by method
# path from message-only descriptors), so reflection cannot list them: they are named here.
COMPAT_METHODS = [
    ("/nvidia.riva.asr.RivaSpeechRecognition/Recognize", False, False),
    ("/nvidia.riva.asr.RivaSpeechRecognition/StreamingRecognize", True, True),
    ("/nvidia.riva.asr.RivaSpeechRecognition/GetRivaSpeechRecognitionConfig", False, False),
    ("/google.cloud.speech.v1.Speech/Recognize", False, False),
    ("/google.cloud.speech.v1.Speech/StreamingRecognize", True, True),
]


def _call(channel: grpc.Channel, path: str, client_streaming: bool, server_streaming: bool, metadata: Any) -> None:
    """Call ``path`` with an empty request (raw bytes: any message type parses from b"").

    Health/Watch never ends by itself, hence the short deadline there.
    """
    timeout = 0.5 if path.startswith("/grpc.health.v1.Health/") else 5
    if client_streaming and server_streaming:
        list(channel.stream_stream(path)(iter([b""]), timeout=timeout, metadata=metadata))
    elif client_streaming:
        channel.stream_unary(path)(iter([b""]), timeout=timeout, metadata=metadata)
    elif server_streaming:
        list(channel.unary_stream(path)(b"", timeout=timeout, metadata=metadata))
    else:
        channel.unary_unary(path)(b"", timeout=timeout, metadata=metadata)


def _code(channel: grpc.Channel, method: tuple[str, bool, bool], metadata: Any) -> grpc.StatusCode:
    try:
        _call(channel, *method, metadata)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


def test_every_rpc_but_health_needs_a_valid_bearer_token(recognizer, tiny_model_path, tmp_path):
    (tmp_path / "tokens.txt").write_text(f"{TOKEN}\n")
    with _server(recognizer, tiny_model_path, tokens_file=str(tmp_path / "tokens.txt")) as server:
        methods = _every_method(server.address)
        assert {"/asr.v1.Recognizer/Recognize", "/asr.v1.Recognizer/StreamingRecognize"} <= {m[0] for m in methods}
        anonymous = [
            (),
            (("authorization", "Bearer wrong"),),
            (("authorization", f"Basic {TOKEN}"),),
            (("authorization", "Bearer "),),
            (("x-api-key", TOKEN),),
        ]
        with grpc.insecure_channel(server.address) as channel:
            for method in methods:
                health = method[0].startswith("/grpc.health.v1.Health/")
                for metadata in anonymous:
                    code = _code(channel, method, metadata)
                    if health:
                        assert code != grpc.StatusCode.UNAUTHENTICATED, method
                    else:
                        assert code == grpc.StatusCode.UNAUTHENTICATED, (method, metadata, code)
                code = _code(channel, method, (("authorization", f"Bearer {TOKEN}"),))
                assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED), (method, code)
        assert any(m[0].startswith("/grpc.health.v1.Health/") for m in methods)


# --- SIGTERM with several streams in flight ------------------------------------------------------------


def test_sigterm_lets_every_stream_in_flight_finish(tiny_model_path, samples, tmp_path):
    """Five streams are mid-utterance when SIGTERM arrives: each still gets its final, and the process
    exits 0 within the grace period (test_server_shutdown covers health and refusal of new calls)."""
    port, metrics_port = _free_port(), _free_port()
    command = [
        sys.executable,
        "-m",
        "server",
        "--model",
        str(tiny_model_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--device",
        "cpu",
        "--grace-period-s",
        "20",
    ]
    log = tmp_path / "server.log"
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent, stderr=log.open("w"))
    address = f"127.0.0.1:{port}"
    try:
        with AsrClient(address, timeout_s=1, max_attempts=1) as probe:
            assert wait_for(lambda: process.poll() is None and _healthy(probe), 60), log.read_text()
        paths = [p for _, p in sorted(zip(samples.durations, samples.paths))][:5]
        halfway = threading.Barrier(len(paths) + 1, timeout=30)
        finals: dict[Path, list[str]] = {}
        resume = threading.Event()

        def stream(path: Path) -> None:
            pcm, rate = read_pcm16(path)
            chunks = list(chunk_pcm16(pcm, rate, 100))

            def paused() -> Iterator[bytes]:
                yield from chunks[: len(chunks) // 2]
                halfway.wait()
                resume.wait(30)  # the second half goes out after SIGTERM
                yield from chunks[len(chunks) // 2 :]

            with AsrClient(address, timeout_s=30, max_attempts=1) as client:
                finals[path] = [u.text for u in client.stream(paused(), StreamOptions(rate)) if u.is_final]

        threads = [threading.Thread(target=stream, args=(p,)) for p in paths]
        for t in threads:
            t.start()
        halfway.wait()
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        active = lambda: "asr_active_streams 5.0" in urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: E731
        assert wait_for(active)  # the server holds all five streams, half sent
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        resume.set()
        for t in threads:
            t.join(30)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert sorted(finals) == sorted(paths), log.read_text()
    assert all(finals[p] for p in paths)  # none lost: every stream ended with its final result


def _healthy(client: AsrClient) -> bool:
    try:
        return client.health() == "SERVING"
    except RecognitionError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
