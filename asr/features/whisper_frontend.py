"""A frozen Whisper encoder as the front end: padded waveforms → hidden states, one frame per 20 ms.

Same surface as :class:`~asr.features.frontend.LogMelFrontend` (``forward(waves (B, N),
wave_lens) -> feats (B, T, F), feat_lens``, ``frame_shift_s``, ``output_dim``), so the model,
search, streaming and server never know which front end a checkpoint uses. ``F`` is ``L · D``:
the ``L`` requested layers side by side (the model mixes them when ``L > 1``).

Log-mel exactly as Whisper computes it (openai/whisper ``log_mel_spectrogram``): 25 ms Hann
window, 10 ms hop, 80 Slaney mel bins, ``log10`` clamped to 8 decades below the utterance's
loudest bin, then ``(x + 4) / 4``; frame ``t`` is centred on sample ``160·t`` and the audio is
followed by zeros (Whisper pads with 30 s of them), so ``N // 160`` frames per utterance.

Inputs longer than Whisper's 30 s window are encoded in overlapping 30 s windows whose middles
are kept (5 s of context each side), so hour-long files work with bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import torch
from torch import Tensor, nn

from asr.config import FrontendConfig
from asr.errors import ConfigError
from asr.features.whisper_encoder import MAX_FRAMES, NUM_MELS, WhisperEncoder
from asr.features.whisper_weights import WhisperWeights, load_whisper_weights

SAMPLE_RATE = 16000  # Whisper's only rate; asr.audio resamples everything to the model's rate first
N_FFT = 400  # 25 ms window
HOP = 160  # 10 ms per mel frame; the encoder's stride-2 conv makes it 20 ms per output frame
LOG_RANGE = 8.0  # decades kept below each utterance's loudest mel bin
WINDOW_MEL = 2 * MAX_FRAMES  # 30 s of mel frames: the most one encoder pass can take
WINDOW_STEP_MEL = 2000  # long inputs: windows every 20 s, keeping each one's middle (5 s context per side)
_WINDOWS_PER_PASS = 4  # windows of a long input encoded together: bounds memory for hour-long files


class WhisperLogMel(nn.Module):
    """``waves (B, N)`` → Whisper log-mel ``(B, 80, T_mel)``, ``mel_lens (B,)`` and each row's silence value ``(B,)``.

    Frames past a row's length are 0; the silence value is what Whisper's own 30 s padding
    would put there (used only when encoding padded windows). Runs in float32 under autocast.
    """

    filters: Tensor
    window: Tensor

    def __init__(self) -> None:
        super().__init__()
        filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=NUM_MELS)  # (80, 201), Slaney
        self.register_buffer("filters", torch.from_numpy(filters).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    @staticmethod
    def num_frames(wave_lens: Tensor) -> Tensor:
        """``N // 160`` mel frames, at least 1 (a shorter input is one frame of its samples and zeros)."""
        return torch.div(wave_lens, HOP, rounding_mode="floor").clamp(min=1)

    def forward(self, waves: Tensor, wave_lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        wave_lens = wave_lens.to(waves.device)
        with torch.autocast(device_type=waves.device.type, enabled=False):
            waves = waves.float() * _time_mask(wave_lens, waves.size(1))
            # Zeros after every row's end, as Whisper's padding: frames near the end read them,
            # identically alone and in a batch (a batch's longest row has no padding of its own).
            waves = nn.functional.pad(waves, (0, N_FFT // 2))
            spec = torch.stft(waves, N_FFT, HOP, window=self.window, center=True, return_complex=True)
            mel_lens = self.num_frames(wave_lens)
            power = spec[..., : int(mel_lens.max())].abs().square()  # (B, 201, T_mel)
            log_mel = torch.matmul(self.filters, power).clamp(min=1e-10).log10()  # (B, 80, T_mel)
            valid = _time_mask(mel_lens, log_mel.size(-1))[:, None, :]
            peak = log_mel.masked_fill(~valid, -torch.inf).amax(dim=(1, 2))  # (B,)
            floor = peak - LOG_RANGE
            log_mel = torch.maximum(log_mel, floor[:, None, None])
            silence = (torch.clamp(floor, min=-10.0) + 4.0) / 4.0  # log10 of the 1e-10 clamp is -10
            return (log_mel + 4.0) / 4.0 * valid, mel_lens, silence


def _time_mask(lens: Tensor, size: int) -> Tensor:
    return torch.arange(size, device=lens.device) < lens[:, None]


@dataclass(frozen=True)
class _Window:
    row: int
    start: int  # first mel frame (even, so window frames align with the utterance's 20 ms frames)
    length: int  # mel frames in the window
    keep_from: int  # encoder frames of the window that are kept: [keep_from, keep_to)
    keep_to: int


def _plan_windows(mel_lens: list[int]) -> list[_Window]:
    """Windows of up to 30 s every 20 s; each encoder frame is kept from one window, away from its edges."""
    context = (WINDOW_MEL - WINDOW_STEP_MEL) // 4  # encoder frames dropped at each inner window edge
    windows = []
    for row, total in enumerate(mel_lens):
        start = 0
        while True:
            length = min(WINDOW_MEL, total - start)
            last = start + WINDOW_MEL >= total
            keep_to = (length + 1) // 2 if last else WINDOW_STEP_MEL // 2 + context
            windows.append(_Window(row, start, length, 0 if start == 0 else context, keep_to))
            if last:
                break
            start += WINDOW_STEP_MEL
    return windows


class WhisperFrontend(nn.Module):
    """Padded waveforms ``(B, N)`` + lengths → frozen Whisper hidden states ``(B, T, L·D)`` + ``feat_lens``.

    ``T = ceil((N // 160) / 2)`` per utterance; frames past a length are 0. Nothing here is
    trained or saved: the weights are read from their pinned package at construction, and
    :meth:`identity` is what a checkpoint records to refuse other weights later.
    """

    def __init__(self, cfg: FrontendConfig, sample_rate: int, weights: WhisperWeights | None = None) -> None:
        super().__init__()
        if sample_rate != SAMPLE_RATE:
            raise ConfigError(f"the Whisper front end needs audio.sample_rate {SAMPLE_RATE}, got {sample_rate}")
        if not cfg.layers or len(set(cfg.layers)) != len(cfg.layers):
            raise ConfigError(f"model.frontend.layers must name one or more distinct layers, got {list(cfg.layers)}")
        self.cfg = cfg
        weights = weights or load_whisper_weights(cfg.whisper_model)
        self.weights_identity = weights.identity()
        self.log_mel = WhisperLogMel()
        self.encoder = WhisperEncoder.from_weights(weights)
        self.layers = self.encoder.resolve_layers(cfg.layers)
        if cfg.precision == "bf16":
            self.encoder.to(torch.bfloat16)

    @property
    def frame_shift_s(self) -> float:
        """20 ms: Whisper's 10 ms mel frames after its stride-2 convolution."""
        return 2 * HOP / SAMPLE_RATE

    @property
    def output_dim(self) -> int:
        """F = L · D."""
        return len(self.layers) * self.encoder.dim

    @property
    def num_layers(self) -> int:
        """L, the hidden states side by side in each frame."""
        return len(self.layers)

    def identity(self) -> dict[str, str]:
        return {"type": "whisper_encoder", **self.weights_identity}

    def num_frames(self, wave_lens: Tensor) -> Tensor:
        return torch.div(WhisperLogMel.num_frames(wave_lens) + 1, 2, rounding_mode="floor")

    @torch.no_grad()
    def forward(self, waves: Tensor, wave_lens: Tensor) -> tuple[Tensor, Tensor]:
        """``feats (B, T, L·D)`` float32, ``feat_lens (B,)``."""
        if waves.dim() != 2:
            raise ValueError(f"waves must be (B, N), got shape {tuple(waves.shape)}")
        mel, mel_lens, silence = self.log_mel(waves, wave_lens)
        feat_lens = torch.div(mel_lens + 1, 2, rounding_mode="floor")
        if mel.size(-1) <= WINDOW_MEL:
            hidden = self._encode(mel, mel_lens, silence)
        else:
            hidden = self._encode_long(mel, mel_lens, silence)
        batch, frames = hidden.shape[:2]
        feats = hidden.reshape(batch, frames, -1).float()
        return feats * _time_mask(feat_lens, frames)[:, :, None], feat_lens

    def _encode(self, mel: Tensor, mel_lens: Tensor, silence: Tensor) -> Tensor:
        """One encoder pass over ``mel (B, 80, <= 3000)`` → ``(B, ceil(T_mel / 2), L, D)``."""
        frames = mel.size(-1)
        dtype = next(self.encoder.parameters()).dtype
        if self.cfg.pad_to_30s:
            valid = _time_mask(mel_lens, WINDOW_MEL)[:, None, :]
            padded = nn.functional.pad(mel, (0, WINDOW_MEL - frames))
            padded = torch.where(valid, padded, silence[:, None, None])
            hidden, _ = self.encoder(padded.to(dtype), None, self.layers)
            return hidden[:, : (frames + 1) // 2]
        hidden, _ = self.encoder(mel.to(dtype), mel_lens, self.layers)
        return hidden

    def _encode_long(self, mel: Tensor, mel_lens: Tensor, silence: Tensor) -> Tensor:
        """Inputs over 30 s: overlapping windows (:func:`_plan_windows`), a few per encoder pass."""
        windows = _plan_windows(mel_lens.tolist())
        out: Tensor | None = None
        for first in range(0, len(windows), _WINDOWS_PER_PASS):
            group = windows[first : first + _WINDOWS_PER_PASS]
            width = max(w.length for w in group)
            pieces = torch.zeros(len(group), mel.size(1), width, device=mel.device)
            for i, w in enumerate(group):
                pieces[i, :, : w.length] = mel[w.row, :, w.start : w.start + w.length]
            lens = torch.tensor([w.length for w in group], device=mel.device)
            hidden = self._encode(pieces, lens, silence[[w.row for w in group]])  # (W, T_w, L, D)
            if out is None:
                out = hidden.new_zeros(mel.size(0), (mel.size(-1) + 1) // 2, *hidden.shape[2:])
            for i, w in enumerate(group):
                begin = w.start // 2 + w.keep_from
                out[w.row, begin : begin + w.keep_to - w.keep_from] = hidden[i, w.keep_from : w.keep_to]
        assert out is not None
        return out
