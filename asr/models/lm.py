"""Token-level LSTM language model for shallow fusion in the attention/joint beam search.

It offers the same ``init_state / score / select`` surface as the attention decoder, so one
scorer adapter in ``asr.decoding`` serves both. EOS (id 1) is the start symbol, as in the
decoder; the blank (id 0) is never a target, so it simply learns a tiny probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

EOS_ID = 1  # tokenizer contract: end of sentence, also the start symbol
IGNORE_ID = -1  # padding value of token batches; contributes no loss


@dataclass
class LMState:
    """LSTM state after the consumed prefix; rows of dim 1 are beams (K)."""

    hidden: Tensor  # (L, K, H)
    cell: Tensor  # (L, K, H)


class RNNLM(nn.Module):
    """Embedding → multi-layer LSTM → linear: ``tokens_in (B, U)`` → logits ``(B, U, V)``.

    Training sees whole sentences (one cuDNN call); search advances one token per ``score``.
    """

    def __init__(
        self, vocab_size: int, embed_dim: int = 128, hidden_size: int = 512, num_layers: int = 2, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.rnn = nn.LSTM(
            embed_dim, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens_in: Tensor, state: LMState | None = None) -> tuple[Tensor, LMState]:
        """Logits ``(B, U, V)`` of the token after each position, and the state after the last one."""
        embedded = self.dropout(self.embedding(tokens_in))  # (B, U, E)
        initial = None if state is None else (state.hidden, state.cell)
        out, (hidden, cell) = self.rnn(embedded, initial)  # (B, U, H)
        return self.output(self.dropout(out)), LMState(hidden, cell)

    def loss(self, tokens: Tensor, token_lens: Tensor) -> Tensor:
        """Cross-entropy of ``tokens (B, U)`` (padded with -1) followed by EOS, summed and divided by B."""
        positions = torch.arange(tokens.size(1) + 1, device=tokens.device)  # (U + 1,)
        targets = nn.functional.pad(tokens, (0, 1), value=IGNORE_ID)
        targets = torch.where(positions == token_lens[:, None], EOS_ID, targets)
        targets = targets.masked_fill(positions > token_lens[:, None], IGNORE_ID)
        inputs = torch.where(tokens < 0, EOS_ID, tokens)  # padding positions only feed ignored targets
        tokens_in = torch.cat([torch.full_like(tokens[:, :1], EOS_ID), inputs], dim=1)
        logits, _ = self.forward(tokens_in)
        total = nn.functional.cross_entropy(
            logits.float().reshape(-1, self.vocab_size), targets.reshape(-1), ignore_index=IGNORE_ID, reduction="sum"
        )
        return total / tokens.size(0)

    def init_state(self, enc: Tensor, enc_lens: Tensor) -> LMState:
        """Empty-history state (beam dim 1); the encoder output is unused but keeps the scorer surface."""
        zeros = enc.new_zeros(self.rnn.num_layers, 1, self.rnn.hidden_size)
        return LMState(zeros, zeros)

    def score(self, prefixes: Tensor, state: LMState) -> tuple[Tensor, LMState]:
        """Log-probs ``(K, V)`` of the next token; consumes ``prefixes[:, -1]`` (prefixes ``(K, U)``)."""
        logits, new_state = self.forward(prefixes[:, -1:], state)
        return torch.log_softmax(logits[:, -1].float(), dim=-1), new_state

    def select(self, state: LMState, beam_ids: Tensor) -> LMState:
        """Reorder or duplicate beams: row ``k`` of the result is row ``beam_ids[k]`` of ``state``."""
        ids = beam_ids.to(state.hidden.device)
        return LMState(state.hidden.index_select(1, ids), state.cell.index_select(1, ids))
