"""Log-mel frontend, global CMVN and SpecAugment."""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import pytest
import torch

from asr.config import FeatureConfig, SpecAugmentConfig
from asr.errors import ConfigError
from asr.features.frontend import LogMelFrontend
from asr.features.normalization import GlobalCMVN, estimate_cmvn
from asr.features.specaugment import SpecAugment

SAMPLE_RATE = 16000


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def frontend() -> LogMelFrontend:
    return LogMelFrontend(FeatureConfig(), SAMPLE_RATE)


def _pad_with_junk(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B, N) batch whose padding is random noise: only the lengths say where audio ends."""
    lens = torch.tensor([w.numel() for w in waves])
    batch = torch.randn(len(waves), int(lens.max()) + 123)
    for row, wave in enumerate(waves):
        batch[row, : wave.numel()] = wave
    return batch, lens


def test_frame_count_formula_matches_output(frontend: LogMelFrontend) -> None:
    # 25 ms window / 10 ms hop at 16 kHz: 1 + (N - 400) // 160 frames, at least one.
    for num_samples, expected in [(1, 1), (399, 1), (400, 1), (559, 1), (560, 2), (16000, 98)]:
        feats, feat_lens = frontend(torch.randn(1, num_samples), torch.tensor([num_samples]))
        assert feats.shape == (1, expected, 80)
        assert feat_lens.tolist() == [expected]
    assert frontend.frame_shift_s == pytest.approx(0.01)


def test_batched_features_equal_one_by_one(frontend: LogMelFrontend) -> None:
    waves = [torch.randn(n) for n in (16000, 5123, 401, 9000)]
    batch, lens = _pad_with_junk(waves)
    feats, feat_lens = frontend(batch, lens)
    for row, wave in enumerate(waves):
        alone, alone_lens = frontend(wave[None], torch.tensor([wave.numel()]))
        length = int(alone_lens[0])
        assert int(feat_lens[row]) == length
        torch.testing.assert_close(feats[row, :length], alone[0], rtol=1e-5, atol=1e-5)
        assert torch.all(feats[row, length:] == 0)


def test_features_stay_float32_under_autocast(frontend: LogMelFrontend) -> None:
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        feats, _ = frontend(torch.randn(2, 4000), torch.tensor([4000, 3000]))
    assert feats.dtype == torch.float32
    assert torch.isfinite(feats).all()


def test_digital_silence_is_finite(frontend: LogMelFrontend) -> None:
    feats, _ = frontend(torch.zeros(1, 2000), torch.tensor([2000]))
    torch.testing.assert_close(feats, torch.full_like(feats, float(np.log(1e-6))))


def test_one_kilohertz_tone_peaks_in_the_nearest_mel_bin(frontend: LogMelFrontend) -> None:
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = 0.5 * torch.sin(2 * torch.pi * 1000.0 * t)
    feats, _ = frontend(tone[None], torch.tensor([SAMPLE_RATE]))
    centres = librosa.mel_frequencies(n_mels=80 + 2, fmin=20.0, fmax=7600.0)[1:-1]
    expected = int(np.argmin(np.abs(centres - 1000.0)))
    assert int(feats[0].mean(dim=0).argmax()) == expected


def test_frontend_rejects_fft_shorter_than_window() -> None:
    with pytest.raises(ConfigError, match="n_fft"):
        LogMelFrontend(FeatureConfig(n_fft=256), SAMPLE_RATE)


def test_filterbank_is_not_saved_in_state_dict(frontend: LogMelFrontend) -> None:
    assert frontend.state_dict() == {}


def test_cmvn_normalises_its_own_data_to_zero_mean_unit_variance(frontend: LogMelFrontend) -> None:
    rng = np.random.default_rng(0)
    waveforms = [rng.normal(scale=s, size=n).astype(np.float32) for s, n in [(0.1, 8000), (1.0, 3000), (0.5, 6000)]]
    cmvn = estimate_cmvn(frontend, waveforms)
    batch, lens = _pad_with_junk([torch.from_numpy(w) for w in waveforms])
    feats, feat_lens = frontend(batch, lens)
    normalised = cmvn(feats, feat_lens)
    frames = torch.cat([normalised[i, : int(n)] for i, n in enumerate(feat_lens)])  # (sum T, F)
    torch.testing.assert_close(frames.mean(dim=0), torch.zeros(80), atol=1e-4, rtol=0)
    torch.testing.assert_close(frames.std(dim=0, unbiased=False), torch.ones(80), atol=1e-4, rtol=0)
    assert torch.all(normalised[1, int(feat_lens[1]) :] == 0)


def test_cmvn_statistics_round_trip_through_state_dict() -> None:
    cmvn = GlobalCMVN(torch.randn(4), torch.rand(4) + 0.5)
    restored = GlobalCMVN.identity(4)
    restored.load_state_dict(cmvn.state_dict())
    feats = torch.randn(1, 3, 4)
    torch.testing.assert_close(restored(feats, torch.tensor([3])), cmvn(feats, torch.tensor([3])))


def test_cmvn_rejects_empty_input(frontend: LogMelFrontend) -> None:
    with pytest.raises(ValueError, match="no audio"):
        estimate_cmvn(frontend, [])


def _masked_cells(cfg: SpecAugmentConfig, feat_lens: list[int], seed: int) -> torch.Tensor:
    feats = torch.ones(len(feat_lens), max(feat_lens), 20)
    augmented = SpecAugment(cfg)(feats, torch.tensor(feat_lens), torch.Generator().manual_seed(seed))
    return augmented == 0


def test_specaugment_is_deterministic_per_seed() -> None:
    cfg = SpecAugmentConfig(freq_width=5, time_width=10, time_width_ratio=0.5)
    first = _masked_cells(cfg, [100, 60], seed=1)
    assert torch.equal(first, _masked_cells(cfg, [100, 60], seed=1))
    assert not torch.equal(first, _masked_cells(cfg, [100, 60], seed=2))
    assert first.any()


def test_specaugment_masks_only_inside_each_length() -> None:
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=5, time_masks=3, time_width=30, time_width_ratio=0.2)
    feat_lens = [100, 20, 7]
    for seed in range(20):
        masked = _masked_cells(cfg, feat_lens, seed)
        for row, length in enumerate(feat_lens):
            assert not masked[row, length:].any()
            time_masked = masked[row, :length].all(dim=1)  # frames masked in every bin
            assert int(time_masked.sum()) <= cfg.time_masks * int(length * cfg.time_width_ratio)


def test_specaugment_disabled_returns_input() -> None:
    feats = torch.randn(2, 10, 20)
    cfg = dataclasses.replace(SpecAugmentConfig(), enabled=False)
    assert SpecAugment(cfg)(feats, torch.tensor([10, 5]), torch.Generator().manual_seed(0)) is feats
