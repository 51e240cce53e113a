"""Waveform augmentation for training: speed perturbation, random gain, white noise.

With a few minutes of speech from a few hundred speakers, these cheap perturbations are what
stop the model from memorising recording conditions. They run in the data loader on numpy
waveforms (N,), never at evaluation or inference time.
"""

from __future__ import annotations

import numpy as np

from asr.audio import resample
from asr.config import AugmentConfig


class WaveformAugment:
    """Random speed, gain and noise from a seeded numpy ``Generator``.

    ``rng_for(epoch, index)`` gives each utterance its own generator, so augmentation depends
    only on (seed, epoch, index): identical with any number of DataLoader workers and on resume.
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int, seed: int = 0) -> None:
        if any(f <= 0 for f in cfg.speed_factors):
            raise ValueError(f"speed factors must be positive, got {cfg.speed_factors}")
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def rng_for(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, index])

    def __call__(self, wave: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """(N,) float32 → (N',) float32 with N' ≈ N / speed factor."""
        rng = self._rng if rng is None else rng
        wave = self.perturb_speed(wave, float(rng.choice(self.cfg.speed_factors)) if self.cfg.speed_factors else 1.0)
        wave = wave * np.float32(10 ** (rng.uniform(-self.cfg.gain_db, self.cfg.gain_db) / 20))
        if rng.random() < self.cfg.noise_prob:
            wave = add_noise(wave, rng.uniform(*self.cfg.noise_snr_db), rng)
        return wave.astype(np.float32, copy=False)

    def perturb_speed(self, wave: np.ndarray, factor: float) -> np.ndarray:
        return perturb_speed(wave, factor, self.sample_rate)


def perturb_speed(wave: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch, as Kaldi's speed perturbation) by resampling."""
    if factor == 1.0:
        return wave
    return resample(wave, round(sample_rate * factor), sample_rate)


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise at ``snr_db`` relative to the mean power of ``wave`` (digital silence stays silent)."""
    power = float(np.mean(np.square(wave, dtype=np.float64))) if wave.size else 0.0
    if power == 0.0:
        return wave
    noise_std = np.sqrt(power / 10 ** (snr_db / 10))
    return (wave + rng.normal(0.0, noise_std, wave.shape)).astype(np.float32)
