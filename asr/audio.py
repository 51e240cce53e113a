"""Decode any supported audio into the one waveform format the model sees.

Every entry point (training, ``asr transcribe``, the server) goes through :func:`load_audio` or
:func:`decode_pcm16`, so every input reaches the frontend as float32 mono at one sample rate (N,).
Bad input raises :class:`AudioError` with a message naming the file and saying what to do: these
strings reach users verbatim through the CLI and the server.
"""

from __future__ import annotations

import io
import logging
import math
import re
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soundfile as sf

from asr.errors import AudioError

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".sph")  # .sph: NIST SPHERE (AN4, TIMIT-style)
_CONVERT_HINT = "convert it to 16-bit WAV or FLAC (e.g. `ffmpeg -i in.m4a -ac 1 -ar 16000 out.wav`)"
# libsndfile's WAV log reports a short data chunk as "data : 32000 (should be 15978)".
_SHORT_DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_PCM16_SCALE = 32768.0  # int16 full scale, so samples land in [-1, 1)
_MAX_KERNEL_RATIO = 2000  # 48000/16000 reduces to 3; 44100/16000 to 441


def load_audio(
    source: str | Path | bytes, sample_rate: int = 16000, *, max_duration_s: float | None = None
) -> np.ndarray:
    """Decode a file path or encoded bytes (wav/flac/ogg/mp3, any rate and channels).

    Returns float32 mono (N,) at ``sample_rate``: channels are averaged, the rate is converted
    with :func:`resample`. ``max_duration_s`` is checked against the header before decoding, so
    an hour-long upload is refused without being decoded.
    """
    name = _describe(source)
    if isinstance(source, (str, Path)):
        _check_path(Path(source))
    try:
        info = _read_info(source, name)
    except AudioError:
        if isinstance(source, (bytes, bytearray, memoryview)) or not _is_mp3_path(source):
            raise
        wave, rate = _decode_with_audioread(Path(source), name)  # libsndfile < 1.1 cannot read mp3
    else:
        _check_duration(info.frames, info.samplerate, name, max_duration_s)
        wave, rate = _decode(source, name, info)
    _check_duration(wave.shape[0], rate, name, max_duration_s)
    if wave.shape[0] == 0:
        raise AudioError(f"{name} contains no audio samples; record or export it again")
    if not np.isfinite(wave).all():
        raise AudioError(f"{name} contains NaN or infinite samples; re-export it as 16-bit PCM")
    mono = wave.mean(axis=1, dtype=np.float32) if wave.shape[1] > 1 else wave[:, 0]
    return resample(np.ascontiguousarray(mono, dtype=np.float32), rate, sample_rate)


def decode_pcm16(data: bytes, sample_rate: int, target_rate: int = 16000, *, channels: int = 1) -> np.ndarray:
    """Raw little-endian LINEAR16 bytes (interleaved when ``channels`` > 1) → float32 mono (N,).

    Empty ``data`` gives an empty array rather than an error, because a streaming client may
    legitimately send an empty chunk; callers that need audio check the length themselves.
    """
    if channels < 1:
        raise AudioError(f"channels must be at least 1, got {channels}")
    if sample_rate <= 0:
        raise AudioError(f"sample rate must be positive, got {sample_rate}")
    frame_bytes = 2 * channels
    if len(data) % frame_bytes:
        raise AudioError(
            f"{len(data)} bytes of LINEAR16 audio is not a whole number of {channels}-channel frames "
            f"({frame_bytes} bytes each); send complete 16-bit samples"
        )
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / _PCM16_SCALE
    frames = samples.reshape(-1, channels)
    mono = frames.mean(axis=1, dtype=np.float32) if channels > 1 else frames[:, 0]
    return resample(np.ascontiguousarray(mono), sample_rate, target_rate)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Convert the rate of ``wav`` (..., N) to (..., ceil(N · target_sr / orig_sr)), float32.

    Uses torchaudio when it is importable (it shares torch's build), else librosa's soxr, the
    high-quality resampler librosa defaults to; both are band-limited, so 8 kHz FSDD audio
    up-sampled to 16 kHz has no energy above 4 kHz rather than aliases.
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    wav = np.asarray(wav, dtype=np.float32)
    if orig_sr == target_sr or wav.shape[-1] == 0:
        return wav
    torchaudio = _torchaudio()
    # torchaudio's kernel is (target / gcd) × (orig / gcd) taps: gigabytes for coprime rates such as
    # 44101 → 16000 (a client may declare any LINEAR16 rate); soxr handles those in constant memory.
    if torchaudio is not None and max(orig_sr, target_sr) // math.gcd(orig_sr, target_sr) <= _MAX_KERNEL_RATIO:
        import torch

        out = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(wav)), orig_sr, target_sr)
        return np.asarray(out.numpy(), dtype=np.float32)
    import librosa

    return np.asarray(librosa.resample(wav, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq"), np.float32)


def probe_audio(data: bytes) -> tuple[int, float]:
    """(native sample rate in Hz, duration in seconds) of encoded audio, from its header alone.

    Lets a server refuse a three-hour file that compresses into a small upload (silence in FLAC is
    a few hundred kB) before decoding it into gigabytes. AudioError when there is no readable header.
    """
    info = _read_info(data, _describe(data))
    return int(info.samplerate), float(info.frames) / max(int(info.samplerate), 1)


def audio_duration(path: str | Path) -> float:
    """Duration in seconds read from the file header (cheap: nothing is decoded)."""
    path = Path(path)
    _check_path(path)
    name = f"audio file {path}"
    try:
        info = _read_info(path, name)
    except AudioError:
        if not _is_mp3_path(path):
            raise
        wave, rate = _decode_with_audioread(path, name)
        return wave.shape[0] / rate
    return float(info.frames) / info.samplerate


def _check_duration(frames: int, rate: int, name: str, max_duration_s: float | None) -> None:
    if max_duration_s is not None and rate > 0 and frames / rate > max_duration_s:
        raise AudioError(
            f"{name} lasts {frames / rate:.1f} s, longer than the limit of {max_duration_s:g} s; "
            "split it into shorter pieces"
        )


def _is_mp3_path(source: str | Path | bytes) -> bool:
    return isinstance(source, (str, Path)) and Path(source).suffix.lower() == ".mp3"


def _decode_with_audioread(path: Path, name: str) -> tuple[np.ndarray, int]:
    """(N, C) float32 via librosa/audioread (needs ffmpeg or GStreamer on the machine)."""
    import librosa

    try:
        wave, rate = librosa.load(str(path), sr=None, mono=False)
    except Exception as exc:  # audioread raises many unrelated types: NoBackendError, EOFError, OSError...
        raise AudioError(
            f"{name} could not be decoded as mp3 ({type(exc).__name__}: {exc}); it may be corrupt, or this "
            f"machine lacks an mp3 decoder (libsndfile >= 1.1 or ffmpeg); {_CONVERT_HINT}"
        ) from exc
    wave = np.asarray(wave, dtype=np.float32)
    return (wave[:, None] if wave.ndim == 1 else wave.T), int(rate)


@lru_cache(maxsize=1)
def _torchaudio() -> ModuleType | None:
    try:
        import torchaudio
    except (ImportError, OSError):  # OSError: a torchaudio built against another torch
        return None
    return torchaudio


def _describe(source: str | Path | bytes) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"audio data ({len(source)} bytes)"
    return f"audio file {source}"


def _check_path(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"audio file {path} does not exist; check the path")
    if not path.is_file():
        raise AudioError(f"audio file {path} is not a regular file; pass a wav/flac/ogg/mp3 file")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes); record or export it again")


def _open(source: str | Path | bytes) -> Any:
    return io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else str(source)


def _read_info(source: str | Path | bytes, name: str) -> Any:
    if isinstance(source, (bytes, bytearray, memoryview)) and len(source) == 0:
        raise AudioError(f"{name} is empty; send encoded audio (wav/flac/ogg/mp3) or raw LINEAR16 with a sample rate")
    try:
        return sf.info(_open(source))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise _undecodable(source, name, exc) from exc


def _decode(source: str | Path | bytes, name: str, info: Any) -> tuple[np.ndarray, int]:
    """(N, C) float32 samples and the native rate; raises AudioError on corrupt or truncated data."""
    try:
        with sf.SoundFile(_open(source)) as f:
            log = f.extra_info
            wave = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{name} is corrupt or truncated ({exc}); re-download or re-export it") from exc
    short = _SHORT_DATA_CHUNK.search(log)
    if short and int(short.group(2)) + 1 < int(short.group(1)):
        raise AudioError(
            f"{name} is truncated: its header announces {short.group(1)} bytes of audio but only "
            f"{short.group(2)} are present; re-download or re-export it"
        )
    # mp3 headers may estimate the length from the bit rate; allow two mp3 frames (2 × 1152) of slack.
    if wave.shape[0] < info.frames - max(2304, 0.01 * info.frames):
        raise AudioError(
            f"{name} is truncated: decoded {wave.shape[0]} of the {info.frames} frames its header announces; "
            "re-download or re-export it"
        )
    return wave, rate


def _undecodable(source: str | Path | bytes, name: str, exc: Exception) -> AudioError:
    if isinstance(source, (str, Path)):
        suffix = Path(source).suffix.lower()
        if suffix not in SUPPORTED_EXTENSIONS:
            return AudioError(
                f"{name}: unsupported format {suffix or '(no extension)'!r}; supported are "
                f"{', '.join(SUPPORTED_EXTENSIONS)}; {_CONVERT_HINT}"
            )
        return AudioError(f"{name} is not a readable {suffix[1:]} file ({exc}); it may be corrupt or truncated")
    return AudioError(
        f"{name} is not a recognised wav/flac/ogg/mp3 stream ({exc}); send a supported format, "
        "or raw LINEAR16 together with its sample rate"
    )
