"""The Google Cloud Speech v1 API, through the unmodified ``google-cloud-speech`` client (insecure
channel transport) against a real loopback server; results must equal the server's ``asr.v1`` ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from asr.inference import Recognizer
from client import AsrClient, StreamOptions
from client.audio import chunk_pcm16, read_pcm16
from server.app import ServerThread
from server.config import ServerConfig

speech = pytest.importorskip("google.cloud.speech")
transports = pytest.importorskip("google.cloud.speech_v1.services.speech.transports")
api_exceptions = pytest.importorskip("google.api_core.exceptions")


@pytest.fixture(scope="module")
def server(tiny_model_path: Path) -> Iterator[ServerThread]:
    recognizer = Recognizer.from_checkpoint(tiny_model_path, device="cpu")
    cfg = ServerConfig(host="127.0.0.1", port=0, metrics_port=-1, model=str(tiny_model_path), max_batch_delay_ms=1)
    with ServerThread(cfg, recognizer) as running:
        yield running


@pytest.fixture(scope="module")
def speech_client(server: ServerThread) -> Iterator[speech.SpeechClient]:
    channel = grpc.insecure_channel(server.address)
    yield speech.SpeechClient(transport=transports.SpeechGrpcTransport(channel=channel))
    channel.close()


@pytest.fixture(scope="module")
def known(samples) -> list[tuple[Path, str]]:
    return sorted(zip(samples.paths, samples.texts), key=lambda pt: samples.durations[samples.paths.index(pt[0])])[:8]


def test_recognize_linear16_gives_the_transcript_word_times_and_confidences(speech_client, known):
    for path, text in known[:4]:
        pcm, rate = read_pcm16(path)
        config = speech.RecognitionConfig(
            encoding=speech.RecognitionConfig.AudioEncoding.LINEAR16, sample_rate_hertz=rate, language_code="en-US",
            enable_word_time_offsets=True, enable_word_confidence=True,
        )
        response = speech_client.recognize(config=config, audio=speech.RecognitionAudio(content=pcm))
        result = response.results[0]
        best = result.alternatives[0]
        duration_s = len(pcm) / 2 / rate
        assert best.transcript == text
        assert [w.word for w in best.words] == text.split()
        assert all(
            0 <= w.start_time.total_seconds() <= w.end_time.total_seconds() <= duration_s + 0.01 for w in best.words
        )
        assert all(0 < w.confidence <= 1 for w in best.words)
        assert result.result_end_time.total_seconds() == pytest.approx(duration_s, abs=0.05)


def test_recognize_of_a_wav_file_without_encoding_reads_its_header(speech_client, known):
    path, text = known[0]
    config = speech.RecognitionConfig(language_code="en-US")
    response = speech_client.recognize(config=config, audio=speech.RecognitionAudio(content=path.read_bytes()))
    assert response.results[0].alternatives[0].transcript == text


def _streaming_config(rate: int, **extra: bool) -> speech.StreamingRecognitionConfig:
    config = speech.RecognitionConfig(
        encoding=speech.RecognitionConfig.AudioEncoding.LINEAR16, sample_rate_hertz=rate, language_code="en-US",
        enable_word_time_offsets=True,
    )
    return speech.StreamingRecognitionConfig(config=config, **extra)


def test_streaming_matches_asr_v1_interim_and_final_results(speech_client, server, known):
    path, text = known[-1]
    pcm, rate = read_pcm16(path)
    chunks = list(chunk_pcm16(pcm, rate, 100))
    requests = (speech.StreamingRecognizeRequest(audio_content=c) for c in chunks)
    responses = list(speech_client.streaming_recognize(_streaming_config(rate, interim_results=True), requests))
    google = [(r.is_final, r.alternatives[0].transcript) for response in responses for r in response.results]
    with AsrClient(server.address, timeout_s=20) as client:
        native = [(u.is_final, u.text) for u in client.stream(chunks, StreamOptions(sample_rate_hz=rate))]
    assert google == native
    assert google[-1] == (True, text)
    final = responses[-1].results[0]
    assert [w.word for w in final.alternatives[0].words] == text.split()
    assert final.stability == 0.0  # Google sets stability on interim results only


def test_single_utterance_ends_with_the_event_then_the_final(speech_client, known):
    path, text = known[-1]
    pcm, rate = read_pcm16(path)
    requests = (speech.StreamingRecognizeRequest(audio_content=c) for c in chunk_pcm16(pcm, rate, 100))
    config = _streaming_config(rate, single_utterance=True)
    responses = list(speech_client.streaming_recognize(config, requests))
    event = speech.StreamingRecognizeResponse.SpeechEventType.END_OF_SINGLE_UTTERANCE
    assert responses[-2].speech_event_type == event
    assert [(r.is_final, r.alternatives[0].transcript) for r in responses[-1].results] == [(True, text)]


@pytest.mark.parametrize(
    "change",
    [
        {"enable_automatic_punctuation": True},
        {"language_code": "fr-FR"},
        {"diarization_config": speech.SpeakerDiarizationConfig(enable_speaker_diarization=True)},
        {"encoding": speech.RecognitionConfig.AudioEncoding.AMR},
    ],
)
def test_unsupported_options_are_refused_with_invalid_argument(speech_client, known, change):
    pcm, rate = read_pcm16(known[0][0])
    config = speech.RecognitionConfig(
        encoding=speech.RecognitionConfig.AudioEncoding.LINEAR16, sample_rate_hertz=rate, language_code="en-US"
    )
    for name, value in change.items():
        setattr(config, name, value)
    with pytest.raises(api_exceptions.InvalidArgument):
        speech_client.recognize(config=config, audio=speech.RecognitionAudio(content=pcm))


def test_long_running_recognize_is_unimplemented(speech_client, known):
    config = speech.RecognitionConfig(language_code="en-US")
    audio = speech.RecognitionAudio(content=known[0][0].read_bytes())
    with pytest.raises(api_exceptions.MethodNotImplemented):
        speech_client.long_running_recognize(config=config, audio=audio)
