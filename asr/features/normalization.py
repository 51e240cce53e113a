"""Global cepstral mean and variance normalisation (CMVN).

One mean and standard deviation per mel bin, estimated on the training set and stored as
buffers, so they travel inside the model's ``state_dict`` and inference normalises exactly as
training did.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from asr.features.frontend import Frontend

_MIN_STD = 1e-5  # a bin that is constant over the corpus (e.g. above a band limit) must not divide by ~0


class GlobalCMVN(nn.Module):
    """``(feats - mean) / std`` per mel bin, keeping padding frames at exactly 0."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        if mean.dim() != 1 or mean.shape != std.shape:
            raise ValueError(f"mean and std must both be (F,), got {tuple(mean.shape)} and {tuple(std.shape)}")
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("std", std.detach().float().clamp(min=_MIN_STD).clone())

    @classmethod
    def identity(cls, n_mels: int) -> GlobalCMVN:
        """A no-op CMVN (mean 0, std 1): for ``use_cmvn: false``, or as a shell for ``load_state_dict``."""
        return cls(torch.zeros(n_mels), torch.ones(n_mels))

    def forward(self, feats: Tensor, feat_lens: Tensor) -> Tensor:
        """Normalise ``feats (B, T, F)``; frames at or past ``feat_lens (B,)`` are returned as 0."""
        valid = torch.arange(feats.size(1), device=feats.device) < feat_lens.to(feats.device)[:, None]  # (B, T)
        return (feats - self.mean) / self.std * valid[:, :, None]


@torch.no_grad()
def estimate_cmvn(frontend: Frontend, waveforms: Iterable[np.ndarray]) -> GlobalCMVN:
    """Mean and std of ``frontend`` features over every frame of ``waveforms`` (each ``(N,)``).

    Utterances are processed one at a time (no padding to mask) on the frontend's device.
    """
    device = next(itertools.chain(frontend.buffers(), frontend.parameters())).device

    def features() -> Iterable[Tensor]:
        for wave in waveforms:
            if wave.size == 0:
                continue
            waves = torch.as_tensor(np.asarray(wave, dtype=np.float32), device=device)[None]  # (1, N)
            feats, feat_lens = frontend(waves, torch.tensor([waves.size(1)], device=device))
            yield feats[0, : int(feat_lens[0])]

    return cmvn_from_features(features(), frontend.output_dim)


def cmvn_from_features(features: Iterable[Tensor | np.ndarray], dim: int) -> GlobalCMVN:
    """Mean and std per dimension over every frame of ``features`` (each ``(T, F)``, e.g. read from a feature cache).

    The sums are accumulated in float64: float32 sums of squares over millions of frames lose
    the digits that the variance is made of.
    """
    total = torch.zeros(dim, dtype=torch.float64)
    total_sq = torch.zeros(dim, dtype=torch.float64)
    count = 0
    for frames in features:
        frames = torch.as_tensor(frames).double().cpu()  # (T, F)
        if frames.dim() != 2 or frames.size(1) != dim:
            raise ValueError(f"features must be (T, {dim}), got {tuple(frames.shape)}")
        total += frames.sum(dim=0)
        total_sq += frames.square().sum(dim=0)
        count += frames.size(0)
    if count == 0:
        raise ValueError("estimate_cmvn got no audio; pass a non-empty list of training waveforms")
    mean = total / count
    var = (total_sq / count - mean.square()).clamp(min=0.0)
    return GlobalCMVN(mean.float(), var.sqrt().float())
