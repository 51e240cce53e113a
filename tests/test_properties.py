"""Property-based tests: whatever bytes or request fields arrive, decoding and conversion fail only
with the library's own errors (which the server maps to status codes), never with anything else,
and whatever decodes is finite float32 mono."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asr.audio import decode_pcm16, load_audio
from asr.config import SearchConfig
from asr.errors import AudioError, ConfigError, LimitExceeded
from protos import asr_service_pb2 as pb
from server import convert
from server.config import ServerConfig

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAPPED = (AudioError, ConfigError, LimitExceeded)  # the errors the ErrorInterceptor turns into status codes
LIMITS = ServerConfig(max_audio_s=5.0)
RATES = st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 8009])
SUBTYPES = st.sampled_from(["PCM_16", "PCM_24", "PCM_U8", "FLOAT", "DOUBLE"])
SPECIAL = st.sampled_from([0.0, 1.0, -1.0, 1e6, float("nan"), float("inf"), -float("inf")])


def _assert_waveform(wave: np.ndarray) -> None:
    assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) > 0
    assert np.isfinite(wave).all()


@st.composite
def wav_files(draw: st.DrawFn) -> bytes:
    """Real WAV/FLAC containers with odd channel counts, rates and sample formats, sometimes holding
    NaN/inf/huge samples, sometimes cut short or with bytes flipped."""
    frames, channels = draw(st.integers(0, 400)), draw(st.integers(1, 6))
    wave = np.random.default_rng(draw(st.integers(0, 2**16))).uniform(-1, 1, (frames, channels))
    if frames and draw(st.booleans()):
        wave[draw(st.integers(0, frames - 1)), 0] = draw(SPECIAL)
    fmt = draw(st.sampled_from(["WAV", "FLAC"]))
    subtype = draw(SUBTYPES) if fmt == "WAV" else "PCM_16"
    out = io.BytesIO()
    sf.write(out, np.nan_to_num(wave) if fmt == "FLAC" else wave, draw(RATES), format=fmt, subtype=subtype)
    data = bytearray(out.getvalue())
    damage = draw(st.sampled_from(["none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "flip" and data:
        data[draw(st.integers(0, len(data) - 1))] ^= 0xFF
    return bytes(data)


@FAST
@given(data=st.one_of(wav_files(), st.binary(max_size=2048)))
def test_load_audio_returns_finite_mono_or_raises_audio_error(data: bytes) -> None:
    try:
        wave = load_audio(data, max_duration_s=60)
    except AudioError as exc:
        assert str(exc)
        return
    _assert_waveform(wave)


@FAST
@given(data=st.binary(max_size=4096), rate=st.integers(-5, 200_000), channels=st.integers(-1, 8))
def test_decode_pcm16_returns_finite_mono_or_raises_audio_error(data: bytes, rate: int, channels: int) -> None:
    try:
        wave = decode_pcm16(data, rate, channels=channels)
    except AudioError:
        return
    assert wave.dtype == np.float32 and wave.ndim == 1 and np.isfinite(wave).all()


INT32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def recognition_configs(draw: st.DrawFn) -> pb.RecognitionConfig:
    """Any field values a client could put on the wire, unknown enum numbers included."""
    hints = draw(st.lists(st.tuples(st.text(max_size=12), st.floats(width=32)), max_size=4))
    return pb.RecognitionConfig(
        encoding=draw(st.sampled_from([0, 1, 2, 99])),
        sample_rate_hz=draw(st.one_of(st.sampled_from([0, 8000, 16000, 44100, 192_000, 192_001]), INT32)),
        audio_channel_count=draw(st.one_of(st.integers(-2, 40), INT32)),
        max_alternatives=draw(st.one_of(st.integers(-2, 12), INT32)),
        search_method=draw(st.integers(-1, 9)),
        beam_size=draw(st.one_of(st.integers(-2, 40), INT32)),
        phrase_hints=[pb.PhraseHint(phrase=p, boost=b) for p, b in hints],
    )


@FAST
@given(config=recognition_configs(), audio=st.one_of(wav_files(), st.binary(max_size=2048)))
def test_recognize_conversion_raises_only_mapped_errors(config: pb.RecognitionConfig, audio: bytes) -> None:
    try:
        convert.search_config(config, SearchConfig(), LIMITS)
        wave = convert.decode_audio(config, audio, 16000, LIMITS.max_audio_s)
    except MAPPED as exc:
        assert str(exc)
        return
    _assert_waveform(wave)


@FAST
@given(
    config=recognition_configs(),
    interim=st.booleans(),
    silence_ms=st.one_of(st.integers(-5, 5000), INT32),
    max_utterance_s=st.floats(-5, 100, width=32),
    disabled=st.booleans(),
    chunks=st.lists(st.binary(max_size=600), max_size=5),
)
def test_streaming_conversion_raises_only_mapped_errors(
    config: pb.RecognitionConfig,
    interim: bool,
    silence_ms: int,
    max_utterance_s: float,
    disabled: bool,
    chunks: list[bytes],
) -> None:
    endpointing = pb.EndpointingConfig(silence_ms=silence_ms, max_utterance_s=max_utterance_s, disabled=disabled)
    streaming = pb.StreamingConfig(config=config, interim_results=interim, endpointing=endpointing)
    try:
        convert.streaming_options(streaming, SearchConfig(), LIMITS)
        rate, channels = convert.linear16_format(config)
        pcm = convert.PcmStream(rate, 16000, channels)
        pieces = [pcm.push(chunk) for chunk in chunks] + [pcm.flush()]
    except MAPPED as exc:
        assert str(exc)
        return
    for piece in pieces:
        assert piece.dtype == np.float32 and piece.ndim == 1 and np.isfinite(piece).all()
