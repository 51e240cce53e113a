"""Waveform augmentation: speed changes length, gain and noise stay in range, all seeded."""

from __future__ import annotations

import numpy as np
import pytest

from asr.audio import load_audio
from asr.config import AugmentConfig
from asr.data.augment import WaveformAugment, add_noise


@pytest.fixture(scope="module")
def speech(samples) -> np.ndarray:
    return load_audio(samples.paths[samples.texts.index("yes")])  # (16000,) real speech


def test_speed_perturbation_changes_duration_by_the_factor(speech: np.ndarray) -> None:
    augment = WaveformAugment(AugmentConfig(), 16000)
    assert len(augment.perturb_speed(speech, 1.1)) == pytest.approx(16000 / 1.1, abs=2)
    assert len(augment.perturb_speed(speech, 0.9)) == pytest.approx(16000 / 0.9, abs=2)
    assert augment.perturb_speed(speech, 1.0) is speech


def test_only_configured_speed_factors_are_used(speech: np.ndarray) -> None:
    cfg = AugmentConfig(speed_factors=(0.9, 1.1), gain_db=0.0, noise_prob=0.0)
    augment = WaveformAugment(cfg, 16000, seed=0)
    lengths = {len(augment(speech)) for _ in range(12)}
    assert lengths <= {round(16000 / 0.9), round(16000 / 1.1)} | {round(16000 / 0.9) + 1, round(16000 / 1.1) + 1}
    assert len(lengths) == 2


def test_gain_stays_within_the_configured_decibels(speech: np.ndarray) -> None:
    augment = WaveformAugment(AugmentConfig(speed_factors=(1.0,), gain_db=6.0, noise_prob=0.0), 16000, seed=1)
    for _ in range(10):
        ratio = np.abs(augment(speech)).max() / np.abs(speech).max()
        assert 10 ** (-6 / 20) - 1e-4 <= ratio <= 10 ** (6 / 20) + 1e-4


def test_noise_is_added_at_the_requested_snr(speech: np.ndarray) -> None:
    noisy = add_noise(speech, 10.0, np.random.default_rng(0))
    noise = noisy - speech
    snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.2)
    assert noisy.dtype == np.float32


def test_digital_silence_gets_no_noise() -> None:
    silence = np.zeros(1600, np.float32)
    assert np.array_equal(add_noise(silence, 10.0, np.random.default_rng(0)), silence)


def test_same_seed_same_output_and_per_item_generators_differ(speech: np.ndarray) -> None:
    cfg = AugmentConfig(noise_prob=1.0)
    a, b = WaveformAugment(cfg, 16000, seed=3), WaveformAugment(cfg, 16000, seed=3)
    np.testing.assert_array_equal(a(speech), b(speech))
    np.testing.assert_array_equal(a(speech, a.rng_for(0, 5)), b(speech, b.rng_for(0, 5)))
    assert not np.array_equal(a(speech, a.rng_for(0, 5)), a(speech, a.rng_for(1, 5)))


def test_output_is_float32_and_finite(speech: np.ndarray) -> None:
    out = WaveformAugment(AugmentConfig(noise_prob=1.0), 16000, seed=0)(speech)
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_non_positive_speed_factor_is_refused() -> None:
    with pytest.raises(ValueError, match="speed factors"):
        WaveformAugment(AugmentConfig(speed_factors=(0.0, 1.0)), 16000)
