"""Audio files and arrays as LINEAR16 bytes and chunks; optional real-time pacing for simulated live input.

The client never resamples (that would pull in an audio stack): it sends PCM at the file's own
rate and declares it, and the server resamples.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile

_PCM16_MAX = 32767


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] (N,) or (N, C) → mono little-endian int16 bytes (channels averaged)."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return (np.clip(samples, -1.0, 1.0) * _PCM16_MAX).astype("<i2").tobytes()


def read_pcm16(path: str | Path) -> tuple[bytes, int]:
    """(mono LINEAR16 bytes, sample rate) of an audio file soundfile can read (wav/flac/ogg/mp3)."""
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return to_pcm16(samples), int(rate)


def chunk_pcm16(pcm: bytes, sample_rate_hz: int, chunk_ms: int = 100) -> Iterator[bytes]:
    """Split mono LINEAR16 bytes into ``chunk_ms`` pieces (the last may be shorter)."""
    size = 2 * max(1, sample_rate_hz * chunk_ms // 1000)
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]


def paced(chunks: Iterable[bytes], sample_rate_hz: int) -> Iterator[bytes]:
    """Yield each chunk no earlier than the moment its last sample would have been captured live."""
    start = time.perf_counter()
    sent_s = 0.0
    for chunk in chunks:
        sent_s += len(chunk) / (2 * sample_rate_hz)
        delay = start + sent_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield chunk
