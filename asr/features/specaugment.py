"""SpecAugment (Park et al. 2019): random frequency and time masks, for training only.

Masks are drawn from a ``torch.Generator`` the trainer passes in, so a resumed run reproduces
the same masks. Masked cells are set to 0, which after CMVN is the corpus mean; apply it after
:class:`~asr.features.normalization.GlobalCMVN`. Masks touch only frames inside each
utterance's length: time masks are placed within it (a short utterance in a batch of long ones
is not spared by a mask that fell on padding) and are at most ``time_width_ratio`` of it wide.
"""

from __future__ import annotations

import torch
from torch import Tensor

from asr.config import SpecAugmentConfig


def _mask_spans(widths_max: Tensor, extent: Tensor, num_masks: int, size: int, generator: torch.Generator) -> Tensor:
    """``num_masks`` random spans per row, as a boolean ``(B, size)`` mask (True = masked).

    Row ``b`` gets spans of width uniform in ``[0, widths_max[b]]`` starting uniformly so that
    each span lies inside ``[0, extent[b])``. ``widths_max`` and ``extent`` are ``(B,)`` CPU longs.
    """
    batch = extent.size(0)
    widths_max = torch.minimum(widths_max, extent)
    u_width = torch.rand(batch, num_masks, generator=generator)
    u_start = torch.rand(batch, num_masks, generator=generator)
    widths = (u_width * (widths_max[:, None] + 1)).long().clamp(max=widths_max[:, None])  # (B, M)
    room = extent[:, None] - widths  # (B, M) last valid start
    starts = (u_start * (room + 1)).long().clamp(max=room)
    positions = torch.arange(size)[None, None, :]  # (1, 1, size)
    inside = (positions >= starts[:, :, None]) & (positions < (starts + widths)[:, :, None])  # (B, M, size)
    return inside.any(dim=1)


class SpecAugment:
    """Callable applying ``freq_masks`` frequency and ``time_masks`` time masks per utterance."""

    def __init__(self, cfg: SpecAugmentConfig) -> None:
        self.cfg = cfg

    def __call__(self, feats: Tensor, feat_lens: Tensor, generator: torch.Generator) -> Tensor:
        """Return a masked copy of ``feats (B, T, F)``; ``generator`` must be a CPU generator.

        With ``cfg.enabled`` false the input is returned unchanged.
        """
        cfg = self.cfg
        if not cfg.enabled or feats.numel() == 0:
            return feats
        batch, num_frames, num_bins = feats.shape
        lens = feat_lens.detach().cpu().long().clamp(max=num_frames)
        masked = torch.zeros(batch, num_frames, num_bins, dtype=torch.bool)
        if cfg.freq_masks > 0 and cfg.freq_width > 0:
            freq_extent = torch.full((batch,), num_bins, dtype=torch.long)
            freq_max = torch.full((batch,), cfg.freq_width, dtype=torch.long)
            valid = torch.arange(num_frames)[None, :] < lens[:, None]  # (B, T)
            freq = _mask_spans(freq_max, freq_extent, cfg.freq_masks, num_bins, generator)  # (B, F)
            masked |= freq[:, None, :] & valid[:, :, None]
        if cfg.time_masks > 0 and cfg.time_width > 0:
            time_max = torch.minimum(
                torch.full((batch,), cfg.time_width, dtype=torch.long),
                (lens.double() * cfg.time_width_ratio).long(),
            )
            masked |= _mask_spans(time_max, lens, cfg.time_masks, num_frames, generator)[:, :, None]
        return feats.masked_fill(masked.to(feats.device), 0.0)
