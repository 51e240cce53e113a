"""CTC output layer: a linear projection to the vocabulary (blank = id 0) and its loss."""

from __future__ import annotations

import torch
from torch import Tensor, nn

BLANK_ID = 0  # fixed by the tokenizer contract: id 0 is the CTC blank


class CTCHead(nn.Module):
    """``enc (B, T', D)`` → ``log_probs (B, T', V)``, always float32.

    The log-softmax runs in float32 even under autocast: CTC sums probabilities over all
    alignments, and bf16 log-probs make the loss (and greedy ties) noticeably noisy.
    """

    def __init__(self, input_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(input_dim, vocab_size)

    def forward(self, enc: Tensor) -> Tensor:
        logits = self.proj(enc)  # (B, T', V)
        return torch.log_softmax(logits.float(), dim=-1)

    def loss(self, log_probs: Tensor, enc_lens: Tensor, tokens: Tensor, token_lens: Tensor) -> Tensor:
        """CTC loss summed over utterances and divided by B (a per-utterance mean).

        ``tokens (B, U)`` are padded with -1 and never contain blank. ``zero_infinity`` turns
        an impossible alignment (more tokens than frames) into a zero loss instead of an inf
        that would poison the whole batch's gradients.
        """
        batch = log_probs.size(0)
        targets = tokens.clamp(min=0)  # padding beyond token_lens is ignored, but must be a valid id
        with torch.autocast(device_type=log_probs.device.type, enabled=False):
            total = nn.functional.ctc_loss(
                log_probs.float().transpose(0, 1),  # (T', B, V)
                targets,
                enc_lens,
                token_lens,
                blank=BLANK_ID,
                reduction="sum",
                zero_infinity=True,
            )
        return total / batch
