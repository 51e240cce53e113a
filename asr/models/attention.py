"""Location-aware attention (Chorowski et al. 2015, "Attention-Based Models for Speech Recognition").

Energy of encoder frame ``t`` for decoder query ``s``:
``e_t = wᵀ tanh(W_k h_t + W_q s + W_f (conv * α_prev)_t + b)``. The location term (a 1-D
convolution over the previous step's attention weights) tells the model where it attended
last, which keeps the alignment moving monotonically through long utterances instead of
jumping between similar-sounding regions. Padded frames get energy −inf.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LocationAwareAttention(nn.Module):
    """Content + location attention over encoder frames.

    ``project_keys`` is separate from ``forward`` so callers compute ``W_k h`` once per
    utterance rather than once per output token.
    """

    def __init__(
        self, enc_dim: int, query_dim: int, attention_dim: int, location_channels: int, location_kernel: int
    ) -> None:
        super().__init__()
        if location_kernel % 2 == 0:
            raise ValueError(f"location_kernel must be odd so the filter is centred, got {location_kernel}")
        self.key_proj = nn.Linear(enc_dim, attention_dim)
        self.query_proj = nn.Linear(query_dim, attention_dim, bias=False)
        self.location_conv = nn.Conv1d(
            1, location_channels, kernel_size=location_kernel, padding=location_kernel // 2, bias=False
        )
        self.location_proj = nn.Linear(location_channels, attention_dim, bias=False)
        self.energy = nn.Linear(attention_dim, 1, bias=False)

    def project_keys(self, enc: Tensor) -> Tensor:
        """``enc (B, T', D)`` → keys ``(B, T', A)``."""
        return self.key_proj(enc)

    def forward(
        self, query: Tensor, enc: Tensor, keys: Tensor, mask: Tensor, prev_weights: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One attention step.

        Args:
            query: decoder state ``(K, Q)``.
            enc: encoder output ``(K, T', D)``, or ``(1, T', D)`` shared by all K rows (beam search).
            keys: ``project_keys(enc)``, ``(K or 1, T', A)``.
            mask: ``(K or 1, T')`` boolean, True on real frames.
            prev_weights: previous attention weights ``(K, T')``.

        Returns:
            context ``(K, D)`` and weights ``(K, T')`` (0 on padded frames, rows sum to 1).
        """
        location = self.location_conv(prev_weights[:, None, :])  # (K, C, T')
        location = self.location_proj(location.transpose(1, 2))  # (K, T', A)
        hidden = torch.tanh(keys + self.query_proj(query)[:, None, :] + location)
        energies = self.energy(hidden).squeeze(-1)  # (K, T')
        energies = energies.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(energies, dim=-1)
        context = torch.matmul(weights[:, None, :], enc).squeeze(1)  # (K, D)
        return context, weights


def initial_weights(mask: Tensor) -> Tensor:
    """Uniform attention over each row's real frames ``(B, T')``: the "previous" alignment of step 0."""
    mask = mask.float()
    return mask / mask.sum(dim=-1, keepdim=True)
