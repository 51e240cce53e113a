"""Whisper's audio encoder in plain PyTorch, loaded from the CTranslate2 weights (no ctranslate2 at run time).

Architecture (Radford et al. 2022; openai/whisper ``AudioEncoder``): two GELU convolutions over
the 80-bin log-mel (the second with stride 2, so one output frame per 20 ms), fixed sinusoidal
positions, ``num_layers`` pre-norm transformer blocks (self-attention, then a 4×-wide GELU MLP,
each with a residual) and a final LayerNorm. It reproduces CTranslate2's encoder output to
about 1e-3 absolute on the same log-mel (``tests/test_whisper_frontend.py``).

Whisper was trained on 30 s windows (1,500 frames); this module also encodes shorter inputs
("trimmed"), masking padded frames so that an utterance encodes the same alone or in a batch:
convolution outputs past each length are zeroed before the next layer reads them (as zero
padding would be), and attention never attends to them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from asr.errors import ConfigError
from asr.features.whisper_weights import WhisperWeights

NUM_MELS = 80  # Whisper tiny/base/small/medium input bins (large-v3 uses 128 and is not supported)
MAX_FRAMES = 1500  # positions Whisper has embeddings for: 30 s at 20 ms
_BLOCK_NAME = re.compile(r"encoder/layer_(\d+)/")


def _time_mask(lens: Tensor, size: int) -> Tensor:
    """``(B, size)`` bool, True before each length."""
    return torch.arange(size, device=lens.device) < lens[:, None]


class WhisperBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``; ``(B, T, D)`` → same."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"Whisper width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.attn_ln = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)  # query, key, value fused (the key's bias is 0, as in Whisper)
        self.attn_out = nn.Linear(dim, dim)
        self.mlp_ln = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor, valid: Tensor | None) -> Tensor:
        """``valid (B, T)`` bool marks real frames (keys elsewhere are ignored); None = all real."""
        batch, frames, dim = x.shape
        qkv = self.qkv(self.attn_ln(x)).view(batch, frames, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, D / heads)
        mask = None if valid is None else valid[:, None, None, :]
        attended = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        x = x + self.attn_out(attended.transpose(1, 2).reshape(batch, frames, dim))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.mlp_ln(x))))


class WhisperEncoder(nn.Module):
    """Log-mel ``(B, 80, T_mel)`` → hidden states ``(B, T, L, D)`` of the requested layers, ``T = ceil(T_mel / 2)``.

    Layer ``0`` is the convolution stem plus positions; layer ``i`` is the output of block ``i``;
    the last block's output is taken after the final LayerNorm, i.e. exactly what Whisper's
    decoder attends to.
    """

    positions: Tensor

    def __init__(self, dim: int, num_heads: int, num_layers: int) -> None:
        super().__init__()
        self.dim, self.num_layers = dim, num_layers
        self.conv1 = nn.Conv1d(NUM_MELS, dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(MAX_FRAMES, dim))
        self.blocks = nn.ModuleList(WhisperBlock(dim, num_heads) for _ in range(num_layers))
        self.ln_post = nn.LayerNorm(dim)

    @classmethod
    def from_weights(cls, weights: WhisperWeights) -> WhisperEncoder:
        """Build and load from CTranslate2 ``encoder/*`` tensors; any missing or extra tensor is an error."""
        tensors = weights.tensors
        num_layers = len({m.group(1) for name in tensors if (m := _BLOCK_NAME.match(name))})
        dim = int(tensors["encoder/conv1/weight"].shape[0])
        encoder = cls(dim, int(tensors["encoder/num_heads"]), num_layers)
        state = {}
        for name, array in tensors.items():
            if name != "encoder/num_heads":
                state[_state_name(name)] = torch.from_numpy(array)
        try:
            encoder.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"the Whisper {weights.model} weights do not fit the encoder: {exc}") from exc
        return encoder.eval().requires_grad_(False)

    def resolve_layers(self, layers: Sequence[int]) -> list[int]:
        """Layer indices in ``[0, num_layers]``; negative ones count from the end (-1 = last)."""
        resolved = []
        for layer in layers:
            index = layer + self.num_layers + 1 if layer < 0 else layer
            if not 0 <= index <= self.num_layers:
                raise ConfigError(
                    f"Whisper layer {layer} does not exist: this encoder has layers 0..{self.num_layers} "
                    f"(0 = convolution stem, -1 = last)"
                )
            resolved.append(index)
        return resolved

    def forward(self, mel: Tensor, mel_lens: Tensor | None, layers: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Hidden states ``(B, T, L, D)`` and ``lens (B,)``; ``mel_lens`` None = no padding to mask (30 s windows).

        ``layers`` must come from :meth:`resolve_layers`. Blocks above the highest requested
        layer are not run.
        """
        if mel.size(-1) > 2 * MAX_FRAMES:
            raise ValueError(f"Whisper encodes at most {2 * MAX_FRAMES} mel frames at once, got {mel.size(-1)}")
        x = nn.functional.gelu(self.conv1(mel))  # (B, D, T_mel)
        if mel_lens is not None:
            x = x * _time_mask(mel_lens, x.size(-1))[:, None, :].to(x.dtype)
        x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)  # (B, T, D)
        lens = (
            torch.full((x.size(0),), x.size(1), device=x.device)
            if mel_lens is None
            else torch.div(mel_lens + 1, 2, rounding_mode="floor")
        )
        valid = None if mel_lens is None else _time_mask(lens, x.size(1))
        x = x + self.positions[: x.size(1)].to(x.dtype)
        states = {0: x}
        for index, block in enumerate(self.blocks[: max(layers)], start=1):
            x = block(x, valid)
            states[index] = self.ln_post(x) if index == self.num_layers else x
        hidden = torch.stack([states[i] for i in layers], dim=2)  # (B, T, L, D)
        if valid is not None:
            hidden = hidden * valid[:, :, None, None].to(hidden.dtype)
        return hidden, lens


def _state_name(ct2_name: str) -> str:
    """CTranslate2 variable name → this module's ``state_dict`` key."""
    parts = ct2_name.split("/")[1:]  # drop "encoder"
    leaf = {"gamma": "weight", "beta": "bias"}.get(parts[-1], parts[-1])
    if parts[0] == "position_encodings":
        return "positions"
    if parts[0] == "layer_norm":
        return f"ln_post.{leaf}"
    if parts[0] in ("conv1", "conv2"):
        return f"{parts[0]}.{leaf}"
    block = int(parts[0].removeprefix("layer_"))
    module = {
        ("self_attention", "layer_norm"): "attn_ln",
        ("self_attention", "linear_0"): "qkv",
        ("self_attention", "linear_1"): "attn_out",
        ("ffn", "layer_norm"): "mlp_ln",
        ("ffn", "linear_0"): "fc1",
        ("ffn", "linear_1"): "fc2",
    }.get((parts[1], parts[2]))
    if module is None:
        raise ConfigError(f"unexpected Whisper encoder variable {ct2_name}")
    return f"blocks.{block}.{module}.{leaf}"
