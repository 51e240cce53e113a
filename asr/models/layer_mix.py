"""SUPERB's learned weighted sum of a frozen upstream's layers (Yang et al. 2021).

A pretrained encoder's layers hold different information (lower ones more acoustic, upper ones
more lexical); rather than picking one by hand, the downstream model learns one softmax weight
per layer. The front end delivers the ``L`` layers side by side in each frame, so this is the
only place that knows a frame is several layers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LayerMix(nn.Module):
    """``feats (B, T, L·D)`` → ``Σ_l softmax(w)_l · feats[..., l, :]``, ``(B, T, D)``; starts as the plain mean."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"LayerMix needs at least 2 layers to mix, got {num_layers}")
        self.num_layers = num_layers
        self.logits = nn.Parameter(torch.zeros(num_layers))

    @property
    def weights(self) -> Tensor:
        """The current mixing weights ``(L,)``, summing to 1."""
        return torch.softmax(self.logits.float(), dim=0)

    def forward(self, feats: Tensor) -> Tensor:
        batch, frames, width = feats.shape
        if width % self.num_layers:
            raise ValueError(f"{width} features per frame do not split into {self.num_layers} layers")
        layers = feats.view(batch, frames, self.num_layers, width // self.num_layers)
        return torch.einsum("btld,l->btd", layers, self.weights.to(feats.dtype))
