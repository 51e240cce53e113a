"""``AsyncAsrClient`` over a real loopback server gives exactly what the synchronous client gives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from client import AsrClient, AsyncAsrClient, RecognitionError, StreamOptions
from client.audio import chunk_pcm16, read_pcm16
from server.app import ServerThread
from server.config import ServerConfig


@pytest.fixture(scope="module")
def server(tiny_model_path: Path) -> Iterator[ServerThread]:
    from asr.inference import Recognizer

    recognizer = Recognizer.from_checkpoint(tiny_model_path, device="cpu")
    cfg = ServerConfig(host="127.0.0.1", port=0, metrics_port=-1, model=str(tiny_model_path))
    with ServerThread(cfg, recognizer) as running:
        yield running


@pytest.fixture(scope="module")
def known_paths(samples) -> list[Path]:
    return [p for _, p in sorted(zip(samples.durations, samples.paths))][:8]


def test_async_transcribe_health_and_models_equal_the_sync_client(server, known_paths):
    with AsrClient(server.address) as sync:
        expected = [sync.transcribe(p) for p in known_paths]

    async def scenario() -> None:
        async with AsyncAsrClient(server.address) as client:
            assert await client.health() == "SERVING"
            (model,) = await client.list_models()
            assert model.is_default
            one = await client.transcribe(known_paths[0])
            many = await client.transcribe_many(known_paths, concurrency=4)
        assert (one.text, one.words) == (expected[0].text, expected[0].words)
        assert [t.text for t in many] == [t.text for t in expected]  # input order, not completion order
        for got, want in zip(many, expected):  # batched forward passes may differ in the last float bits
            spans = [[(w.word, w.start_s, w.end_s) for w in t.words] for t in (got, want)]
            assert spans[0] == spans[1]
            assert [w.confidence for w in got.words] == pytest.approx([w.confidence for w in want.words], abs=1e-4)

    asyncio.run(scenario())


def test_async_stream_from_an_async_generator_equals_the_sync_stream(server, known_paths):
    pcm, rate = read_pcm16(known_paths[-1])
    options = StreamOptions(sample_rate_hz=rate)
    with AsrClient(server.address) as sync:
        expected = [(u.is_final, u.text, u.start_s, u.end_s) for u in sync.stream(chunk_pcm16(pcm, rate), options)]

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in chunk_pcm16(pcm, rate):
            await asyncio.sleep(0)
            yield chunk

    async def scenario() -> list[tuple[bool, str, float, float]]:
        async with AsyncAsrClient(server.address) as client:
            return [(u.is_final, u.text, u.start_s, u.end_s) async for u in client.stream(chunks(), options)]

    got = asyncio.run(scenario())
    assert got == expected and any(not final for final, *_ in got) and got[-1][0]


def test_async_errors_are_recognition_errors_with_status_codes(server, known_paths):
    async def scenario() -> tuple[RecognitionError, RecognitionError, RecognitionError]:
        async with AsyncAsrClient(server.address) as client:
            with pytest.raises(RecognitionError) as bad_audio:
                await client.transcribe(b"not audio at all")
            with pytest.raises(RecognitionError) as bad_stream:
                async for _ in client.stream([b"\x00"], StreamOptions(sample_rate_hz=16000)):
                    pass
            assert (await client.transcribe(known_paths[0])).text  # still serving
        async with AsyncAsrClient("127.0.0.1:1", max_attempts=2, timeout_s=5) as nowhere:
            with pytest.raises(RecognitionError) as unavailable:
                await nowhere.health()
        return bad_audio.value, bad_stream.value, unavailable.value

    bad_audio, bad_stream, unavailable = asyncio.run(scenario())
    assert bad_audio.code == grpc.StatusCode.INVALID_ARGUMENT and bad_audio.request_id
    assert bad_stream.code == grpc.StatusCode.INVALID_ARGUMENT
    assert unavailable.code == grpc.StatusCode.UNAVAILABLE
