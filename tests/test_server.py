"""The gRPC service over a real loopback server, always through AsrClient (so the client is tested too).

Results must equal the library's (unary == Recognizer, streaming == a library StreamingSession with
the same options), every error path must return its status code and leave the server serving,
and concurrent requests must share a forward pass.
"""

from __future__ import annotations

import io
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client.parser import text_string_to_metric_families

from asr.audio import decode_pcm16, load_audio, resample
from asr.inference import Recognizer
from asr.streaming import StreamingOptions
from client import AsrClient, RecognitionError, RecognitionOptions, StreamOptions
from client.audio import chunk_pcm16, read_pcm16, to_pcm16
from server.app import ServerThread
from server.config import ServerConfig
from server.convert import PcmStream

LIMITS = {
    "max_request_bytes": 1_000_000,
    "max_audio_s": 5.0,
    "max_stream_s": 5.0,
    "max_concurrent_streams": 3,
    "max_beam_size": 8,
}


@pytest.fixture(scope="module")
def recognizer(tiny_model_path: Path) -> Recognizer:
    return Recognizer.from_checkpoint(tiny_model_path, device="cpu")


@pytest.fixture(scope="module")
def server(tiny_model_path: Path, recognizer: Recognizer) -> Iterator[ServerThread]:
    # A long batch delay makes "concurrent requests share a batch" deterministic on a busy machine.
    cfg = ServerConfig(
        host="127.0.0.1", port=0, metrics_port=0, model=str(tiny_model_path), max_batch_delay_ms=100, **LIMITS
    )
    with ServerThread(cfg, recognizer) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[AsrClient]:
    with AsrClient(server.address, timeout_s=20) as c:
        yield c


@pytest.fixture(scope="module")
def known_paths(samples) -> list[Path]:
    """The 8 shortest samples: the ones the tiny model memorised."""
    return [p for _, p in sorted(zip(samples.durations, samples.paths))][:8]


def metric(server: ServerThread, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``, scraped over HTTP."""
    assert server.running is not None
    url = f"http://127.0.0.1:{server.running.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def assert_serving(client: AsrClient, path: Path) -> None:
    assert client.transcribe(path).text


def expect_error(code: grpc.StatusCode, call, *args, **kwargs) -> RecognitionError:
    with pytest.raises(RecognitionError) as info:
        result = call(*args, **kwargs)
        if not isinstance(result, (str, list)) and hasattr(result, "__next__"):
            list(result)
    assert info.value.code == code, info.value
    return info.value


def test_health_serving_reflection_and_model_list(client, server):
    assert client.health() == "SERVING"
    assert client.health("asr.v1.Recognizer") == "SERVING"
    with grpc.insecure_channel(server.address) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert {"asr.v1.Recognizer", "grpc.health.v1.Health"} <= set(services)
    (model,) = client.list_models()
    assert model.is_default and model.sample_rate_hz == 16000 and "ctc_greedy" in model.search_methods
    assert (model.max_beam_size, model.max_audio_s, model.max_concurrent_streams) == (8, 5.0, 3)


def test_recognize_gives_the_library_transcript_with_words(client, recognizer, known_paths):
    expected = recognizer.transcribe_files(known_paths)
    for path, library in zip(known_paths, expected):
        result = client.transcribe(path)
        assert result.text == library.text
        assert [w.word for w in result.words] == [w.word for w in library.words]
        for got, want in zip(result.words, library.words):
            assert (got.start_s, got.end_s) == pytest.approx((want.start_s, want.end_s), abs=1e-3)
            assert 0.0 <= got.confidence <= 1.0
        assert result.request_id and result.duration_s == pytest.approx(library.duration_s, abs=1e-3)


def test_linear16_at_another_rate_is_resampled_like_the_container(client, known_paths):
    pcm, rate = read_pcm16(known_paths[0])  # FSDD is 8 kHz
    options = RecognitionOptions(encoding="linear16", sample_rate_hz=rate)
    assert rate != 16000
    assert client.transcribe(pcm, options).text == client.transcribe(known_paths[0]).text


def test_concurrent_requests_share_a_batch_and_equal_unbatched_results(client, server, recognizer, known_paths):
    unbatched = [recognizer.transcribe_batch([load_audio(p)])[0].text for p in known_paths]
    count_before = metric(server, "asr_batch_size_count", kind="recognize")
    sum_before = metric(server, "asr_batch_size_sum", kind="recognize")
    results = client.transcribe_many(known_paths, concurrency=8)
    batches = metric(server, "asr_batch_size_count", kind="recognize") - count_before
    items = metric(server, "asr_batch_size_sum", kind="recognize") - sum_before
    assert [r.text for r in results] == unbatched
    assert items == len(known_paths) and batches < items  # some forward pass held more than one request


def library_stream(recognizer: Recognizer, path: Path, interim: bool) -> list[tuple[bool, str]]:
    options = StreamingOptions(
        chunk_ms=320, right_context_ms=160, interim_results=interim, search=recognizer.search_config
    )
    session = recognizer.open_stream(options)
    results = session.accept(load_audio(path)) + session.finish()
    return [(r.is_final, r.transcript.text) for r in results]


def test_streaming_gives_the_library_results_partials_first(client, recognizer, known_paths):
    partials = 0
    for path in known_paths[:4] + known_paths[-2:]:
        pcm, rate = read_pcm16(path)
        updates = list(client.stream(chunk_pcm16(pcm, rate, 100), StreamOptions(sample_rate_hz=rate)))
        got = [(u.is_final, u.text) for u in updates]
        expected = library_stream(recognizer, path, interim=True)
        assert got == expected  # the same partials and finals, in the same order
        assert updates[-1].is_final and updates[-1].stability == 1.0
        assert all(u.latency_ms >= 0 and u.request_id for u in updates)
        partials += sum(not u.is_final for u in updates)
    assert partials > 0


def test_streaming_without_interim_results_sends_only_finals(client, recognizer, known_paths):
    pcm, rate = read_pcm16(known_paths[-1])
    options = StreamOptions(sample_rate_hz=rate, interim_results=False)
    updates = list(client.stream(chunk_pcm16(pcm, rate, 100), options))
    assert updates and all(u.is_final for u in updates)
    assert [u.text for u in updates] == [t for _, t in library_stream(recognizer, known_paths[-1], interim=False)]


BAD_REQUESTS = {
    "corrupt container": (b"RIFF\x00\x00junk" * 10, RecognitionOptions()),
    "empty audio": (b"", RecognitionOptions()),
    "linear16 without a rate": (b"\x00\x00" * 1600, RecognitionOptions(encoding="linear16")),
    "half a sample": (b"\x00" * 3, RecognitionOptions(encoding="linear16", sample_rate_hz=16000)),
    "beam over the limit": (None, RecognitionOptions(method="ctc_prefix_beam", beam_size=64)),
    "unknown model": (None, RecognitionOptions(model="no-such-model")),
    "decoder search on a CTC-only model": (None, RecognitionOptions(method="attention_beam")),
    "empty phrase hint": (None, RecognitionOptions(phrase_hints=(("  ", 1.0),))),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_malformed_audio_or_config_is_invalid_argument(client, known_paths, case):
    audio, options = BAD_REQUESTS[case]
    audio = known_paths[0] if audio is None else audio
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.transcribe, audio, options)
    assert error.message and error.request_id
    assert_serving(client, known_paths[0])


def test_limits_are_resource_exhausted(client, known_paths):
    too_big = b"\x00" * (LIMITS["max_request_bytes"] + 1000)
    expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, client.transcribe, too_big)
    too_long = np.zeros(int(16000 * (LIMITS["max_audio_s"] + 1)), dtype=np.float32)
    error = expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED, client.transcribe, too_long, RecognitionOptions(sample_rate_hz=16000)
    )
    assert "5 s" in error.message
    assert_serving(client, known_paths[0])


def test_stream_errors_have_their_status_codes(client, known_paths):
    pcm, rate = read_pcm16(known_paths[0])
    too_long = to_pcm16(np.zeros(int(16000 * (LIMITS["max_stream_s"] + 1)), dtype=np.float32))
    chunks = chunk_pcm16(too_long, 16000, 500)
    expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, client.stream, chunks, StreamOptions(sample_rate_hz=16000))
    options = StreamOptions(sample_rate_hz=rate, recognition=RecognitionOptions(method="joint"))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.stream, [pcm], options)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.stream, [b"\x00"], StreamOptions(sample_rate_hz=rate))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.stream, [pcm], StreamOptions(sample_rate_hz=0))
    assert_serving(client, known_paths[0])


def test_streams_beyond_the_limit_are_resource_exhausted(client, server, known_paths):
    release = threading.Event()
    pcm, rate = read_pcm16(known_paths[0])

    def held_chunks() -> Iterator[bytes]:
        yield pcm
        release.wait(20)

    def hold() -> None:
        list(client.stream(held_chunks(), StreamOptions(sample_rate_hz=rate)))

    holders = [threading.Thread(target=hold) for _ in range(LIMITS["max_concurrent_streams"])]
    for t in holders:
        t.start()
    try:
        deadline = time.monotonic() + 10
        while metric(server, "asr_active_streams") < LIMITS["max_concurrent_streams"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(server, "asr_active_streams") == LIMITS["max_concurrent_streams"]
        expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, client.stream, [pcm], StreamOptions(sample_rate_hz=rate))
    finally:
        release.set()
        for t in holders:
            t.join()
    assert metric(server, "asr_active_streams") == 0
    assert_serving(client, known_paths[0])


def test_client_deadline_is_honoured(client, known_paths):
    expect_error(grpc.StatusCode.DEADLINE_EXCEEDED, client.transcribe, known_paths[-1], timeout_s=1e-4)
    assert_serving(client, known_paths[0])


def metric_reaches(server: ServerThread, name: str, target: float, timeout_s: float = 5.0, **labels: str) -> float:
    """Poll until the metric reaches ``target``: the server records it just after the client has its answer."""
    deadline = time.monotonic() + timeout_s
    while (value := metric(server, name, **labels)) < target and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def test_metrics_count_requests_by_status_code_and_audio(client, server, known_paths):
    before = metric(server, "asr_requests_total", method="Recognize", code="INVALID_ARGUMENT")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.transcribe, b"not audio at all")
    labels = {"method": "Recognize", "code": "INVALID_ARGUMENT"}
    assert metric_reaches(server, "asr_requests_total", before + 1, **labels) == before + 1
    assert metric(server, "asr_requests_total", method="Recognize", code="OK") > 0
    assert metric(server, "asr_audio_seconds_total", method="Recognize") > 0
    assert metric(server, "asr_real_time_factor_count") > 0
    assert metric(server, "asr_request_latency_seconds_count", method="Recognize") > 0


def test_stream_resampling_is_seamless_across_chunks(known_paths):
    pcm, rate = read_pcm16(known_paths[0])
    stream = PcmStream(rate, 16000, 1)
    pieces = [stream.push(chunk) for chunk in chunk_pcm16(pcm, rate, 30)] + [stream.flush()]
    whole = resample(decode_pcm16(pcm, rate, rate), rate, 16000)
    joined = np.concatenate(pieces)
    assert len(joined) == len(whole)
    assert np.abs(joined - whole).max() < 1e-3


def test_several_targets_are_balanced_round_robin(server, tiny_model_path, recognizer, known_paths):
    cfg = ServerConfig(host="127.0.0.1", port=0, metrics_port=0, model=str(tiny_model_path))
    with ServerThread(cfg, recognizer) as second:
        before = [metric(s, "asr_requests_total", method="Recognize") for s in (server, second)]
        with AsrClient([server.address, second.address], timeout_s=20) as both:
            texts = [both.transcribe(p).text for p in known_paths[:6]]
        after = [
            metric_reaches(s, "asr_requests_total", b + 1, method="Recognize") for s, b in zip((server, second), before)
        ]
    assert texts == [t.text for t in recognizer.transcribe_files(known_paths[:6])]
    assert all(a - b >= 1 for a, b in zip(after, before))


def test_warm_up_resamples_before_serving_so_the_first_request_of_another_rate_pays_nothing(recognizer, monkeypatch):
    from server import batcher

    rates: list[tuple[int, int]] = []
    real = batcher.load_audio

    def spy(source, sample_rate=16000, **kwargs):
        wave = real(source, sample_rate, **kwargs)
        rates.append((sf.info(io.BytesIO(source)).samplerate, sample_rate))
        return wave

    monkeypatch.setattr(batcher, "load_audio", spy)
    batcher.warm_up(recognizer, StreamingOptions(), max_batch_size=2)
    assert rates and all(native != recognizer.sample_rate == target for native, target in rates)
