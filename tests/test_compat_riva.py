"""The Riva ASR API, through the unmodified ``nvidia-riva-client`` against a real loopback server.

Results must equal what the same server returns over ``asr.v1`` (same batcher, same stream
sessions), on real recordings the tiny model memorised.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from asr.inference import Recognizer
from client import AsrClient, StreamOptions
from client.audio import chunk_pcm16, read_pcm16
from server.app import ServerThread
from server.config import ServerConfig

riva_client = pytest.importorskip("riva.client")


@pytest.fixture(scope="module")
def server(tiny_model_path: Path) -> Iterator[ServerThread]:
    recognizer = Recognizer.from_checkpoint(tiny_model_path, device="cpu")
    cfg = ServerConfig(host="127.0.0.1", port=0, metrics_port=-1, model=str(tiny_model_path), max_batch_delay_ms=1)
    with ServerThread(cfg, recognizer) as running:
        yield running


@pytest.fixture(scope="module")
def asr(server: ServerThread) -> riva_client.ASRService:
    return riva_client.ASRService(riva_client.Auth(uri=server.address, use_ssl=False))


@pytest.fixture(scope="module")
def known(samples) -> list[tuple[Path, str]]:
    return sorted(zip(samples.paths, samples.texts), key=lambda pt: samples.durations[samples.paths.index(pt[0])])[:8]


def test_offline_recognize_of_a_wav_file_gives_the_transcript_and_word_times(asr, known):
    for path, text in known[:4]:
        config = riva_client.RecognitionConfig(
            encoding=riva_client.AudioEncoding.LINEAR_PCM, language_code="en-US", enable_word_time_offsets=True
        )
        riva_client.add_audio_file_specs_to_config(config, path)
        response = asr.offline_recognize(path.read_bytes(), config)  # the whole file, header included
        best = response.results[0].alternatives[0]
        with wave.open(str(path)) as wav:
            duration_ms = 1000 * wav.getnframes() / wav.getframerate()
        assert best.transcript == text
        assert [w.word for w in best.words] == text.split()
        assert all(0 <= w.start_time <= w.end_time <= duration_ms + 1 for w in best.words)
        assert all(0 < w.confidence <= 1 for w in best.words)
        assert response.results[0].audio_processed == pytest.approx(duration_ms / 1000, abs=0.05)


def test_streaming_matches_asr_v1_partials_and_finals(asr, server, known):
    path, text = known[-1]
    pcm, rate = read_pcm16(path)
    chunks = list(chunk_pcm16(pcm, rate, 100))
    config = riva_client.RecognitionConfig(
        encoding=riva_client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=rate, language_code="en-US",
        enable_word_time_offsets=True,
    )
    streaming = riva_client.StreamingRecognitionConfig(config=config, interim_results=True)
    riva = [
        (r.is_final, r.alternatives[0].transcript)
        for response in asr.streaming_response_generator(chunks, streaming)
        for r in response.results
    ]
    with AsrClient(server.address, timeout_s=20) as client:
        native = [(u.is_final, u.text) for u in client.stream(chunks, StreamOptions(sample_rate_hz=rate))]
    assert riva == native
    assert riva[-1] == (True, text)


def test_get_config_names_the_served_model(asr, tiny_model_path):
    request = riva_client.proto.riva_asr_pb2.RivaSpeechRecognitionConfigRequest()
    response = asr.stub.GetRivaSpeechRecognitionConfig(request)
    assert [c.model_name for c in response.model_config] == [tiny_model_path.stem]


@pytest.mark.parametrize(
    "change",
    [
        {"enable_automatic_punctuation": True},
        {"language_code": "de-DE"},
        {"encoding": riva_client.AudioEncoding.MULAW},
        {"profanity_filter": True},
    ],
)
def test_unsupported_options_are_refused_with_invalid_argument(asr, known, change):
    path, _ = known[0]
    config = riva_client.RecognitionConfig(encoding=riva_client.AudioEncoding.LINEAR_PCM, language_code="en-US")
    riva_client.add_audio_file_specs_to_config(config, path)
    for name, value in change.items():
        setattr(config, name, value)
    with pytest.raises(grpc.RpcError) as error:
        asr.offline_recognize(path.read_bytes(), config)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
