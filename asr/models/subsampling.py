"""Time subsampling in front of the RNN encoder, and the one formula for its output length.

Both variants produce exactly ``subsampled_lengths(feat_lens, factor)`` frames, and frames at
or past each utterance's length never influence valid frames: the input is masked, and the
conv variant re-masks after every layer so bias and ReLU outputs in padding cannot leak into
the next layer's receptive field. An utterance therefore encodes identically alone or padded.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from asr.config import EncoderConfig


def subsampled_lengths(feat_lens: Tensor, factor: int) -> Tensor:
    """Frames left after subsampling ``(B,)`` lengths by ``factor``, keeping a partial last group.

    ``ceil(feat_lens / factor)``. CTC loss, attention masks and timestamps all rely on this;
    if it disagreed with the encoder's real output length by one frame, CTC would silently
    become inf (zeroed by ``zero_infinity``) on short utterances instead of raising.
    """
    return torch.div(feat_lens + factor - 1, factor, rounding_mode="floor")


def time_mask(lens: Tensor, size: int) -> Tensor:
    """``(B, size)`` boolean mask, True on frames before each length."""
    return torch.arange(size, device=lens.device) < lens[:, None]


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors


class FrameStacking(nn.Module):
    """Concatenate ``factor`` consecutive frames, then project: ``(B, T, F) → (B, ceil(T/factor), D)``.

    The cheapest subsampling: one matmul, no receptive field beyond the group itself.
    """

    def __init__(self, input_dim: int, output_dim: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.proj = nn.Linear(input_dim * factor, output_dim)

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        batch, num_frames, num_bins = feats.shape
        feats = feats * time_mask(feat_lens, num_frames)[:, :, None].to(feats.dtype)
        pad = -num_frames % self.factor
        if pad:
            feats = nn.functional.pad(feats, (0, 0, 0, pad))
        stacked = feats.reshape(batch, (num_frames + pad) // self.factor, self.factor * num_bins)
        return self.proj(stacked), subsampled_lengths(feat_lens, self.factor)


class ConvSubsampling(nn.Module):
    """Strided 2-D convolutions over (time, mel) + ReLU, flattened and projected to ``output_dim``.

    ``factor`` is split into prime strides (4 → 2·2, 6 → 2·3, 8 → 2·2·2); a stride-1 layer is
    added when that gives fewer than two layers. A stride-``s`` layer uses kernel ``2s − 1``
    and padding ``s − 1``, so it sees every input frame and outputs exactly ``ceil(T / s)``
    frames; nested ceilings compose, so the stack outputs ``ceil(T / factor)``.
    """

    def __init__(self, input_dim: int, output_dim: int, factor: int, channels: int) -> None:
        super().__init__()
        strides = _prime_factors(factor)
        strides += [1] * (2 - len(strides))
        self.factor = factor
        self.strides = strides
        self.convs = nn.ModuleList()
        in_channels, num_bins = 1, input_dim
        for stride in strides:
            self.convs.append(
                nn.Conv2d(in_channels, channels, kernel_size=2 * stride - 1, stride=stride, padding=stride - 1)
            )
            in_channels, num_bins = channels, -(-num_bins // stride)
        self.proj = nn.Linear(channels * num_bins, output_dim)

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        x = feats[:, None]  # (B, 1, T, F)
        lens = feat_lens
        x = x * time_mask(lens, x.size(2))[:, None, :, None].to(x.dtype)
        for conv, stride in zip(self.convs, self.strides, strict=True):
            x = torch.relu(conv(x))  # (B, C, ceil(T / s), ceil(F / s))
            lens = subsampled_lengths(lens, stride)
            x = x * time_mask(lens, x.size(2))[:, None, :, None].to(x.dtype)
        batch, channels, num_frames, num_bins = x.shape
        x = x.transpose(1, 2).reshape(batch, num_frames, channels * num_bins)  # (B, T', C·F')
        return self.proj(x), lens


def build_subsampling(cfg: EncoderConfig, input_dim: int, output_dim: int) -> FrameStacking | ConvSubsampling:
    """The subsampling module selected by ``cfg.subsampling``."""
    if cfg.subsampling == "stack":
        return FrameStacking(input_dim, output_dim, cfg.subsampling_factor)
    if cfg.subsampling == "conv":
        return ConvSubsampling(input_dim, output_dim, cfg.subsampling_factor, cfg.subsampling_channels)
    raise ValueError(f"unknown subsampling {cfg.subsampling!r}; use 'stack' or 'conv'")
