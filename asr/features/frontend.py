"""Log-mel filterbank features computed in torch, on whichever device holds the model; and the
choice between the two front ends (:func:`build_frontend`).

Training, the CLI and the server all run this one module, so features never drift between
them. Framing is Kaldi-style ``snip_edges``: a frame is kept only when its whole window lies
inside the waveform, so frame ``t`` depends on samples ``[t·hop, t·hop + win)`` of its own
utterance and nothing else. That makes the features of an utterance bit-identical whether it
is transcribed alone or zero-padded in a batch, and ``num_frames`` an exact formula.
"""

from __future__ import annotations

from typing import Union

import librosa
import torch
from torch import Tensor, nn

from asr.config import FeatureConfig, ModelConfig
from asr.errors import ConfigError
from asr.features.whisper_frontend import WhisperFrontend


class LogMelFrontend(nn.Module):
    """Padded waveforms ``(B, N)`` + lengths → log-mel features ``(B, T, F)`` + frame counts.

    The mel filterbank is built once with librosa (Slaney scale and area normalisation, the
    same filters ``librosa.feature.melspectrogram`` uses) and kept as a non-persistent buffer:
    it is a pure function of the config, so it never needs to be stored in a checkpoint.
    """

    mel_filters: Tensor
    window: Tensor

    def __init__(self, cfg: FeatureConfig, sample_rate: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.win_length = round(cfg.win_ms * sample_rate / 1000)
        self.hop_length = round(cfg.hop_ms * sample_rate / 1000)
        if self.hop_length < 1 or self.win_length < self.hop_length:
            raise ConfigError(
                f"features: win_ms={cfg.win_ms} and hop_ms={cfg.hop_ms} give a window of {self.win_length} and "
                f"a hop of {self.hop_length} samples at {sample_rate} Hz; use hop_ms > 0 and win_ms >= hop_ms"
            )
        if cfg.n_fft < self.win_length:
            raise ConfigError(
                f"features.n_fft={cfg.n_fft} is shorter than the {self.win_length}-sample window "
                f"(win_ms={cfg.win_ms} at {sample_rate} Hz); raise n_fft to at least {self.win_length}"
            )
        f_max = min(cfg.f_max, sample_rate / 2)  # an 8 kHz model cannot have filters above 4 kHz
        if not 0 <= cfg.f_min < f_max:
            raise ConfigError(f"features: f_min={cfg.f_min} must be >= 0 and below f_max={f_max} Hz")
        filters = librosa.filters.mel(
            sr=sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.f_min, fmax=f_max
        )  # (F, n_fft // 2 + 1)
        self.register_buffer("mel_filters", torch.from_numpy(filters).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=True), persistent=False)

    @property
    def frame_shift_s(self) -> float:
        """Seconds between consecutive feature frames (the hop)."""
        return self.hop_length / self.sample_rate

    @property
    def output_dim(self) -> int:
        """F, the feature dimension the encoder receives (the same name on every front end)."""
        return self.cfg.n_mels

    def identity(self) -> dict[str, str]:
        """What a checkpoint records about the front end; the filterbank itself follows from the config."""
        return {"type": "logmel"}

    def num_frames(self, wave_lens: Tensor) -> Tensor:
        """Frames produced for waveforms of ``wave_lens`` samples ``(B,)``.

        ``1 + (N - win) // hop``; waveforms shorter than one window are zero-padded to one
        window, so every non-empty utterance yields at least one frame.
        """
        return (wave_lens.clamp(min=self.win_length) - self.win_length) // self.hop_length + 1

    def forward(self, waves: Tensor, wave_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Compute ``feats (B, T, F)`` float32 and ``feat_lens (B,)``; frames past a length are 0.

        Runs in float32 even inside an autocast region: a half-precision power spectrum
        overflows on loud audio, and the features would differ between devices.
        """
        if waves.dim() != 2:
            raise ValueError(f"waves must be (B, N), got shape {tuple(waves.shape)}")
        wave_lens = wave_lens.to(waves.device)
        with torch.autocast(device_type=waves.device.type, enabled=False):
            waves = waves.float()
            num_samples = waves.size(1)
            # Samples past each length are zeroed, so what the caller padded with cannot leak in.
            waves = waves * (torch.arange(num_samples, device=waves.device) < wave_lens[:, None])
            # torch.stft centres the window inside each n_fft frame; pad so that the *window* of
            # frame t starts at sample t·hop, and so that a too-short waveform still fills one window.
            left = (self.cfg.n_fft - self.win_length) // 2
            right = self.cfg.n_fft - self.win_length - left + max(0, self.win_length - num_samples)
            waves = nn.functional.pad(waves, (left, right))
            spec = torch.stft(
                waves,
                n_fft=self.cfg.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=self.window,
                center=False,
                return_complex=True,
            )  # (B, n_fft // 2 + 1, T)
            power = spec.real.square() + spec.imag.square()
            mel = torch.matmul(self.mel_filters, power)  # (B, F, T)
            feats = torch.log(mel + self.cfg.log_floor).transpose(1, 2)  # (B, T, F)
            feat_lens = self.num_frames(wave_lens)
            valid = torch.arange(feats.size(1), device=feats.device) < feat_lens[:, None]  # (B, T)
            feats = feats * valid[:, :, None]
        return feats, feat_lens


Frontend = Union[LogMelFrontend, WhisperFrontend]  # forward(waves, wave_lens) -> (feats, feat_lens)


def build_frontend(model: ModelConfig, features: FeatureConfig, sample_rate: int) -> Frontend:
    """The front end ``model.frontend.type`` names; ConfigError if its weights package is missing."""
    if model.frontend.type == "whisper_encoder":
        return WhisperFrontend(model.frontend, sample_rate)
    return LogMelFrontend(features, sample_rate)
