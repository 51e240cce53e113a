"""Audio loading: any supported format, rate and channel count in; 16 kHz mono float32 out."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.audio import audio_duration, decode_pcm16, load_audio, resample
from asr.errors import AudioError


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def test_44k_stereo_wav_loads_as_16k_mono_of_the_right_duration(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    sf.write(path, tone(1.5, 44100, channels=2), 44100, subtype="PCM_16")
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - 24000) <= 1
    assert 0.4 < np.abs(wav).max() < 0.6


@pytest.mark.parametrize(("fmt", "suffix"), [("FLAC", ".flac"), ("OGG", ".ogg"), ("MP3", ".mp3"), ("WAV", ".wav")])
def test_every_supported_format_decodes(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = tmp_path / f"tone{suffix}"
    sf.write(path, tone(1.0, 22050), 22050, format=fmt)
    wav = load_audio(path, 16000)
    assert abs(len(wav) - 16000) < 1200  # mp3 adds encoder delay/padding of up to a frame
    assert np.sqrt(np.mean(wav**2)) > 0.2


def test_stereo_is_downmixed_by_averaging_channels(tmp_path: Path) -> None:
    left = tone(0.5, 16000)
    path = tmp_path / "lr.wav"
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), left / 2, atol=1e-6)


def test_real_8k_fsdd_sample_is_upsampled_to_16k(samples) -> None:
    path = samples.paths[samples.speakers.index("lucas")]
    native, rate = sf.read(path)
    assert rate == 8000
    wav = load_audio(path)
    assert len(wav) == 2 * len(native)
    assert audio_duration(path) == pytest.approx(len(native) / 8000)


def test_bytes_and_path_give_the_same_waveform(samples) -> None:
    path = samples.paths[-1]  # a LibriSpeech FLAC
    np.testing.assert_array_equal(load_audio(path.read_bytes()), load_audio(path))


def test_custom_sample_rate(samples) -> None:
    path = samples.paths[samples.texts.index("yes")]
    assert len(load_audio(path, sample_rate=8000)) == 8000


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"nope\.wav does not exist"):
        load_audio(tmp_path / "nope.wav")


def test_random_bytes_named_wav_raise_audio_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioError, match=r"noise\.wav"):
        load_audio(path)


def test_random_bytes_in_memory_raise_audio_error() -> None:
    with pytest.raises(AudioError, match="not a recognised"):
        load_audio(np.random.default_rng(1).bytes(4000))


def test_zero_byte_file_is_reported_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(AudioError, match=r"empty\.wav is empty"):
        load_audio(path)


def test_wav_with_no_samples_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(path)


def test_truncated_wav_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    sf.write(path, tone(1.0, 16000), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cut\.wav is truncated"):
        load_audio(path)


def test_truncated_flac_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "cut.flac"
    sf.write(path, tone(1.0, 16000), 16000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cut\.flac"):
        load_audio(path)


def test_nan_samples_are_refused(tmp_path: Path) -> None:
    samples = tone(0.2, 16000)
    samples[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(path)


def test_audio_longer_than_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, tone(3.0, 16000), 16000)
    with pytest.raises(AudioError, match=r"lasts 3\.0 s, longer than the limit of 2 s"):
        load_audio(path, max_duration_s=2.0)
    assert len(load_audio(path, max_duration_s=3.0)) == 48000


def test_unsupported_format_says_which_formats_work(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not audio at all, just some text " * 20)
    with pytest.raises(AudioError, match=r"unsupported format '\.txt'.*\.wav, \.flac, \.ogg, \.opus, \.mp3, \.sph"):
        load_audio(path)


def test_directory_is_not_audio(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path)


def test_decode_pcm16_scales_and_downmixes() -> None:
    stereo = np.array([[16384, -16384], [32767, 32767], [-32768, -32768]], dtype="<i2")
    wav = decode_pcm16(stereo.tobytes(), 16000, 16000, channels=2)
    np.testing.assert_allclose(wav, [0.0, 32767 / 32768, -1.0])
    assert wav.dtype == np.float32


def test_decode_pcm16_matches_load_audio_of_the_same_wav(tmp_path: Path) -> None:
    pcm = (tone(0.5, 8000) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.tobytes())
    np.testing.assert_allclose(decode_pcm16(pcm.tobytes(), 8000), load_audio(buffer.getvalue()), atol=1e-6)


def test_decode_pcm16_rejects_partial_samples_and_allows_empty_chunks() -> None:
    with pytest.raises(AudioError, match="not a whole number"):
        decode_pcm16(b"\x00\x01\x02", 16000)
    assert decode_pcm16(b"", 16000).shape == (0,)


def test_resample_8k_to_16k_doubles_length_and_keeps_the_tone() -> None:
    x = tone(1.0, 8000, freq=1000.0)
    y = resample(x, 8000, 16000)
    assert y.dtype == np.float32 and len(y) == 16000
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) == pytest.approx(1000, abs=2)  # 1 Hz per bin for a 1 s signal


def test_resample_same_rate_is_identity() -> None:
    x = tone(0.1, 16000)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)
