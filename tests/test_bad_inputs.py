"""Odd and hostile inputs, one table per surface, each case run through the library, the server and the client.

Every case must end in the library's own error type (or a clean result) and, over gRPC, in its
status code with a message and a request id; after each one the server must still transcribe a
known sample. While these tests run, ``asr.audio._check_path`` raises, which proves that nothing a
request carries is ever opened as a file on the server.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
import torch

import server.__main__ as server_main
from asr.audio import decode_pcm16, load_audio
from asr.config import load_config
from asr.data.manifest import read_manifest
from asr.errors import AsrError, AudioError, CheckpointError, ConfigError, ManifestError
from asr.inference import Recognizer
from client import AsrClient, RecognitionError, RecognitionOptions, StreamOptions
from client.audio import chunk_pcm16
from protos import asr_service_pb2 as pb
from protos import asr_service_pb2_grpc as pb_grpc
from server.app import ServerThread
from server.config import ServerConfig, load_server_config

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
LIMITS = {
    "max_request_bytes": 1_000_000,
    "max_audio_s": 60.0,
    "max_stream_s": 3.0,
    "stream_idle_timeout_s": 1.0,  # so the slow-loris cases end in about a second
    "max_stream_messages": 300,
}


@dataclass(frozen=True)
class Sample:
    """The shortest bundled recording (memorised by the tiny model): float (N,) at its own rate."""

    path: Path
    wave: np.ndarray
    rate: int
    text: str


@pytest.fixture(scope="module")
def recognizer(tiny_model_path: Path) -> Recognizer:
    return Recognizer.from_checkpoint(tiny_model_path, device="cpu")


@pytest.fixture(scope="module")
def sample(samples, recognizer) -> Sample:
    path = min(zip(samples.durations, samples.paths))[1]
    wave, rate = sf.read(str(path), dtype="float32")
    assert rate == 8000  # the LINEAR16 cases below declare it
    return Sample(path, wave, int(rate), recognizer.transcribe_files([path])[0].text)


@pytest.fixture(scope="module")
def server(tiny_model_path: Path, recognizer: Recognizer) -> Iterator[ServerThread]:
    cfg = ServerConfig(host="127.0.0.1", port=0, metrics_port=-1, model=str(tiny_model_path), **LIMITS)
    with ServerThread(cfg, recognizer) as running:
        yield running


@pytest.fixture
def client(server: ServerThread, monkeypatch) -> Iterator[AsrClient]:
    def no_paths(path: Path) -> None:
        raise AssertionError(f"the server opened a path from a request: {path}")

    monkeypatch.setattr("asr.audio._check_path", no_paths)
    with AsrClient(server.address, timeout_s=20, max_attempts=1) as c:
        yield c


def _wav(wave: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    out = io.BytesIO()
    sf.write(out, wave, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def _pcm(wave: np.ndarray) -> bytes:
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def _three_hour_flac(s: Sample) -> bytes:
    """Three hours of silence at 8 kHz: about 270 kB of FLAC that would decode to over a gigabyte."""
    return _wav(np.zeros(8000 * 3 * 3600, dtype=np.int16), 8000, fmt="FLAC")


def _nan(s: Sample, value: float) -> bytes:
    wave = s.wave.copy()
    wave[len(wave) // 2] = value
    return _wav(wave, s.rate, "FLOAT")


@dataclass(frozen=True)
class AudioCase:
    """``make(sample)`` → request bytes; ``library``: the error decoding raises (None = a waveform);
    ``code``: Recognize's status; ``same_text``: an OK result must equal the clean sample's text."""

    make: Callable[[Sample], bytes]
    library: type[AsrError] | None
    code: grpc.StatusCode
    options: RecognitionOptions = field(default_factory=RecognitionOptions)
    same_text: bool = False


def _linear16(rate: int = 8000, channels: int = 1) -> RecognitionOptions:
    return RecognitionOptions(encoding="linear16", sample_rate_hz=rate, channels=channels)


AUDIO_CASES: dict[str, AudioCase] = {
    "empty file": AudioCase(lambda s: b"", AudioError, INVALID),
    "truncated header": AudioCase(lambda s: _wav(s.wave, s.rate)[:30], AudioError, INVALID),
    "truncated data": AudioCase(lambda s: _wav(s.wave, s.rate)[: len(s.wave)], AudioError, INVALID),
    "header with no samples": AudioCase(lambda s: _wav(s.wave[:0], s.rate), AudioError, INVALID),
    "random bytes named .wav": AudioCase(lambda s: np.random.default_rng(0).bytes(4000), AudioError, INVALID),
    "RIFF magic then random bytes": AudioCase(
        lambda s: b"RIFF\x24\x00\x00\x00WAVE" + np.random.default_rng(1).bytes(2000), AudioError, INVALID
    ),
    "a server file path instead of audio": AudioCase(lambda s: str(s.path).encode(), AudioError, INVALID),
    "NaN sample": AudioCase(lambda s: _nan(s, float("nan")), AudioError, INVALID),
    "infinite sample": AudioCase(lambda s: _nan(s, float("inf")), AudioError, INVALID),
    "float samples far beyond full scale": AudioCase(lambda s: _wav(s.wave * 1e6, s.rate, "FLOAT"), None, OK),
    "stereo": AudioCase(lambda s: _wav(np.stack([s.wave, s.wave], 1), s.rate), None, OK, same_text=True),
    "six channels": AudioCase(lambda s: _wav(np.tile(s.wave[:, None], 6), s.rate), None, OK, same_text=True),
    "8-bit unsigned PCM": AudioCase(lambda s: _wav(s.wave, s.rate, "PCM_U8"), None, OK),
    "24-bit PCM": AudioCase(lambda s: _wav(s.wave, s.rate, "PCM_24"), None, OK, same_text=True),
    "32-bit float PCM": AudioCase(lambda s: _wav(s.wave, s.rate, "FLOAT"), None, OK, same_text=True),
    "64-bit float PCM": AudioCase(lambda s: _wav(s.wave, s.rate, "DOUBLE"), None, OK, same_text=True),
    "declared rate disagrees with the header": AudioCase(
        lambda s: _wav(s.wave, s.rate), None, INVALID, RecognitionOptions(sample_rate_hz=44100)
    ),
    "three-hour file": AudioCase(_three_hour_flac, AudioError, EXHAUSTED),
    "one huge message": AudioCase(lambda s: _wav(np.zeros(1_000_000, np.float32), 16000), None, EXHAUSTED),
    "LINEAR16 with an odd byte count": AudioCase(lambda s: _pcm(s.wave) + b"\x00", AudioError, INVALID, _linear16()),
    "LINEAR16 stereo": AudioCase(lambda s: _pcm(np.repeat(s.wave, 2)), None, OK, _linear16(channels=2), same_text=True),
    "LINEAR16 at a coprime declared rate": AudioCase(lambda s: _pcm(s.wave), None, OK, _linear16(rate=8009)),
    "LINEAR16 with 33 channels": AudioCase(lambda s: _pcm(np.zeros(33 * 800)), None, INVALID, _linear16(channels=33)),
}


def _decode_like_the_server(case: AudioCase, source: bytes | Path) -> np.ndarray:
    o = case.options
    if o.encoding == "linear16":
        assert isinstance(source, bytes)
        return decode_pcm16(source, o.sample_rate_hz, channels=max(o.channels, 1))
    return load_audio(source, max_duration_s=600)


@pytest.mark.parametrize("name", list(AUDIO_CASES))
def test_library_decodes_or_raises_its_own_error(name, sample, tmp_path):
    case = AUDIO_CASES[name]
    data = case.make(sample)
    sources: list[bytes | Path] = [data]
    if case.options.encoding == "container" and data:
        (tmp_path / "upload.wav").write_bytes(data)
        sources.append(tmp_path / "upload.wav")
    for source in sources:
        if case.library is None:
            wave = _decode_like_the_server(case, source)
            assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) and np.isfinite(wave).all()
        else:
            with pytest.raises(case.library) as info:
                _decode_like_the_server(case, source)
            assert str(info.value)


@pytest.mark.parametrize("name", list(AUDIO_CASES))
def test_server_answers_with_the_status_code_and_keeps_serving(name, sample, client):
    case = AUDIO_CASES[name]
    data = case.make(sample)
    start = time.monotonic()
    if case.code == OK:
        result = client.transcribe(data, case.options)
        assert result.request_id
        if case.same_text:
            assert result.text == sample.text
    else:
        with pytest.raises(RecognitionError) as info:
            client.transcribe(data, case.options)
        assert info.value.code == case.code, info.value
        assert info.value.message
        if case.code != EXHAUSTED or name != "one huge message":  # refused by gRPC before any handler runs
            assert info.value.request_id
    assert time.monotonic() - start < 10  # refused from the header: never a decode of three hours
    assert client.transcribe(sample.path).text == sample.text


# --- streams ---------------------------------------------------------------------------------------

Message = pb.StreamingRecognizeRequest


def _config(rate: int, channels: int = 1) -> Message:
    options = StreamOptions(sample_rate_hz=rate, recognition=RecognitionOptions(channels=channels))
    return Message(config=options.to_proto())


def _audio(data: bytes) -> Message:
    return Message(audio=data)


def _chunks(s: Sample, ms: int = 100) -> list[bytes]:
    return list(chunk_pcm16(_pcm(s.wave), s.rate, ms))


def _trickle(s: Sample) -> Iterator[Message]:
    """Slow-loris: one sample every half idle timeout, so the idle timer never fires alone."""
    yield _config(s.rate)
    for _ in range(100):
        time.sleep(LIMITS["stream_idle_timeout_s"] / 2)
        yield _audio(b"\x00\x00")


def _silent_after(messages: list[Message], hold: threading.Event) -> Iterator[Message]:
    yield from messages
    hold.wait(20)  # keep the stream open, sending nothing


@dataclass(frozen=True)
class StreamCase:
    """``messages(sample, hold)`` → what the client sends; ``code``: the stream's status;
    an OK stream must end with the clean sample's finals when ``same_text``."""

    messages: Callable[[Sample, threading.Event], Iterator[Message]]
    code: grpc.StatusCode
    same_text: bool = False
    max_s: float = 10.0  # the refusal must come this promptly


STREAM_CASES: dict[str, StreamCase] = {
    "zero-length chunks between the audio": StreamCase(
        lambda s, h: iter([_config(s.rate)] + [_audio(c) for chunk in _chunks(s) for c in (b"", chunk, b"")]),
        OK,
        same_text=True,
    ),
    "only zero-length chunks": StreamCase(lambda s, h: iter([_config(s.rate)] + [_audio(b"")] * 20), OK),
    "stereo LINEAR16": StreamCase(
        lambda s, h: iter([_config(s.rate, 2)] + [_audio(_pcm(np.repeat(s.wave, 2)))]), OK, same_text=True
    ),
    "no messages at all": StreamCase(lambda s, h: iter([]), INVALID),
    "audio without config": StreamCase(lambda s, h: iter([_audio(c) for c in _chunks(s)]), INVALID),
    "config after audio": StreamCase(
        lambda s, h: iter([_config(s.rate), _audio(_chunks(s)[0]), _config(s.rate)]), INVALID
    ),
    "config twice": StreamCase(lambda s, h: iter([_config(s.rate), _config(s.rate)]), INVALID),
    "a WAV file streamed as if it were LINEAR16": StreamCase(
        lambda s, h: iter([_config(s.rate), _audio(_wav(s.wave, s.rate))]), INVALID
    ),
    "a stream that never sends config": StreamCase(lambda s, h: _silent_after([], h), EXHAUSTED, max_s=5),
    "a stream that goes quiet after config": StreamCase(
        lambda s, h: _silent_after([_config(s.rate)], h), EXHAUSTED, max_s=5
    ),
    "slow-loris trickle inside the idle timeout": StreamCase(lambda s, h: _trickle(s), EXHAUSTED, max_s=8),
    "many tiny messages": StreamCase(
        lambda s, h: iter([_config(s.rate)] + [_audio(b"\x00\x00")] * (LIMITS["max_stream_messages"] + 1)),
        EXHAUSTED,
    ),
    "one huge message": StreamCase(
        lambda s, h: iter([_config(16000), _audio(b"\x00" * (LIMITS["max_request_bytes"] + 2))]), EXHAUSTED
    ),
    "more audio than max_stream_s": StreamCase(
        lambda s, h: iter([_config(8000)] + [_audio(b"\x00" * 16000)] * int(LIMITS["max_stream_s"] + 2)), EXHAUSTED
    ),
}


def _finals(stub: pb_grpc.RecognizerStub, messages: Iterator[Message]) -> list[str]:
    responses = stub.StreamingRecognize(messages, timeout=30)
    return [r.results[0].alternatives[0].transcript for r in responses if r.results and r.results[0].is_final]


@pytest.mark.parametrize("name", list(STREAM_CASES))
def test_stream_answers_with_the_status_code_and_keeps_serving(name, sample, server, client):
    case = STREAM_CASES[name]
    hold = threading.Event()
    start = time.monotonic()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.RecognizerStub(channel)
        try:
            if case.code == OK:
                finals = _finals(stub, case.messages(sample, hold))
                if case.same_text:
                    assert " ".join(finals) == sample.text
            else:
                with pytest.raises(grpc.RpcError) as info:
                    _finals(stub, case.messages(sample, hold))
                error = RecognitionError.from_rpc_error(info.value)  # type: ignore[arg-type]
                assert error.code == case.code, error
                assert error.message
        finally:
            hold.set()
    assert time.monotonic() - start < case.max_s
    updates = list(client.stream(_chunks(sample), StreamOptions(sample_rate_hz=sample.rate)))
    assert " ".join(u.text for u in updates if u.is_final) == sample.text


def test_the_client_library_streams_zero_length_chunks(sample, client):
    chunks = [c for chunk in _chunks(sample) for c in (b"", chunk)]
    updates = list(client.stream(chunks, StreamOptions(sample_rate_hz=sample.rate)))
    assert " ".join(u.text for u in updates if u.is_final) == sample.text


# --- files the library and the server read at start-up --------------------------------------------


@dataclass(frozen=True)
class FileCase:
    """``write(tmp, model)`` → a file; ``library(path)`` must raise ``error``; ``server_argv`` (or None
    when the server never reads such a file) must make ``asr-server`` exit with code 2 and a message."""

    write: Callable[[Path, Path], Path]
    library: Callable[[Path], object]
    error: type[AsrError]
    server_argv: Callable[[Path, Path], list[str]] | None


def _write(name: str, data: bytes | str) -> Callable[[Path, Path], Path]:
    def write(tmp: Path, model: Path) -> Path:
        path = tmp / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    return write


def _half_checkpoint(tmp: Path, model: Path) -> Path:
    path = tmp / "half.pt"
    path.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    return path


def _from_checkpoint(path: Path) -> object:
    return Recognizer.from_checkpoint(path, device="cpu")


def _server_with(flag: str) -> Callable[[Path, Path], list[str]]:
    return lambda path, model: [flag, str(path)] if flag == "--config" else ["--model", str(path)]


FILE_CASES: dict[str, FileCase] = {
    "manifest with non-UTF-8 text": FileCase(
        _write("m.jsonl", b'{"audio": "a.wav", "text": "caf\xe9"}\n'), read_manifest, ManifestError, None
    ),
    "malformed YAML": FileCase(
        _write("c.yaml", "model: [unclosed\n  encoder: {"), load_config, ConfigError, _server_with("--config")
    ),
    "YAML that is not a mapping": FileCase(
        _write("c.yaml", "- a\n- b\n"), load_config, ConfigError, _server_with("--config")
    ),
    "unknown config key": FileCase(
        _write("c.yaml", "no_such_key: 1\n"), load_config, ConfigError, _server_with("--config")
    ),
    "missing checkpoint": FileCase(
        lambda tmp, model: tmp / "absent.pt", _from_checkpoint, CheckpointError, _server_with("--model")
    ),
    "corrupt checkpoint": FileCase(
        _write("corrupt.pt", b"PK\x03\x04 not a zip"), _from_checkpoint, CheckpointError, _server_with("--model")
    ),
    "truncated checkpoint": FileCase(_half_checkpoint, _from_checkpoint, CheckpointError, _server_with("--model")),
    "a pickle that is not a checkpoint": FileCase(
        lambda tmp, model: (torch.save({"weights": 1}, tmp / "other.pt"), tmp / "other.pt")[1],
        _from_checkpoint,
        CheckpointError,
        _server_with("--model"),
    ),
}


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_bad_files_raise_clear_errors_and_stop_the_server_cleanly(name, tiny_model_path, tmp_path, monkeypatch, capsys):
    case = FILE_CASES[name]
    path = case.write(tmp_path, tiny_model_path)
    with pytest.raises(case.error) as info:
        case.library(path)
    assert str(info.value)
    if case.server_argv is None:
        return
    if "--config" in case.server_argv(path, tiny_model_path):
        with pytest.raises(ConfigError):
            load_server_config(path)
    monkeypatch.setattr(server_main, "configure_logging", lambda *args: None)
    argv = [*case.server_argv(path, tiny_model_path), "--port", "0", "--metrics-port", "-1", "--device", "cpu"]
    assert server_main.main(argv) == 2
    assert "asr-server: error:" in capsys.readouterr().err
