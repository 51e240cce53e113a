"""Listen-attend-spell decoder (Chan et al. 2016) with location-aware attention.

One step: ``s_i = LSTM([embed(y_{i-1}); c_{i-1}], s_{i-1})`` (input feeding: the previous
context is part of the input), ``c_i, α_i = attend(s_i, α_{i-1})``, ``logits_i = W [s_i; c_i]``.
EOS (id 1) doubles as the start symbol. Training runs the step over the reference tokens
(teacher forcing); search calls ``init_state`` / ``score`` / ``select``, the structural scorer
protocol that ``asr.decoding`` defines, and both paths share ``_step`` so their log-probs agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from asr.config import DecoderConfig
from asr.models.attention import LocationAwareAttention, initial_weights

EOS_ID = 1  # tokenizer contract: end of sentence, also the decoder's start symbol
IGNORE_ID = -1  # target positions that contribute no loss (the tokens' own padding value)


@dataclass
class DecoderState:
    """Everything a decoder step needs besides the token it consumes; rows are beams (K).

    ``enc``, ``keys`` and ``mask`` keep batch size 1 during search: all beams of one utterance
    share them by broadcasting, so ``select`` never copies the encoder output.
    """

    hidden: list[Tensor]  # per LSTM layer, (K, H)
    cell: list[Tensor]  # per LSTM layer, (K, H)
    context: Tensor  # previous attention context (K, D), fed back as input
    weights: Tensor  # previous attention weights (K, T')
    enc: Tensor  # (K or 1, T', D)
    keys: Tensor  # attention keys of enc, (K or 1, T', A)
    mask: Tensor  # (K or 1, T') True on real frames


class AttentionDecoder(nn.Module):
    """Teacher-forced ``forward`` for training and an incremental scorer for search."""

    def __init__(self, cfg: DecoderConfig, enc_dim: int, vocab_size: int) -> None:
        super().__init__()
        if cfg.num_layers < 1:
            raise ValueError(f"decoder needs num_layers >= 1, got {cfg.num_layers}")
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, cfg.embed_dim)
        self.cells = nn.ModuleList(
            nn.LSTMCell(cfg.embed_dim + enc_dim if i == 0 else cfg.hidden_size, cfg.hidden_size)
            for i in range(cfg.num_layers)
        )
        self.attention = LocationAwareAttention(
            enc_dim, cfg.hidden_size, cfg.attention_dim, cfg.location_channels, cfg.location_kernel
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.hidden_size + enc_dim, vocab_size)

    def _initial_state(self, enc: Tensor, enc_lens: Tensor) -> DecoderState:
        """Zero LSTM state and context, uniform previous attention over each row's real frames."""
        batch = enc.size(0)
        mask = torch.arange(enc.size(1), device=enc.device) < enc_lens.to(enc.device)[:, None]  # (B, T')
        zeros = enc.new_zeros(batch, self.cfg.hidden_size)
        return DecoderState(
            hidden=[zeros] * self.cfg.num_layers,
            cell=[zeros] * self.cfg.num_layers,
            context=enc.new_zeros(batch, enc.size(2)),
            weights=initial_weights(mask),
            enc=enc,
            keys=self.attention.project_keys(enc),
            mask=mask,
        )

    def _step(self, embedded: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """Consume one embedded token ``(K, E)``: logits for the next token ``(K, V)`` and the new state."""
        x = torch.cat([embedded, state.context], dim=-1)
        hidden, cell = [], []
        for layer, lstm in enumerate(self.cells):
            h, c = lstm(x, (state.hidden[layer], state.cell[layer]))
            hidden.append(h)
            cell.append(c)
            x = self.dropout(h)
        context, weights = self.attention(x, state.enc, state.keys, state.mask, state.weights)
        logits = self.output(torch.cat([x, context], dim=-1))
        new_state = DecoderState(hidden, cell, context, weights, state.enc, state.keys, state.mask)
        return logits, new_state

    def forward(self, enc: Tensor, enc_lens: Tensor, tokens_in: Tensor) -> Tensor:
        """Teacher-forced logits ``(B, U, V)`` for inputs ``tokens_in (B, U)`` (EOS first, no -1).

        Position ``u`` holds the scores of the token following ``tokens_in[:, :u + 1]``.
        """
        state = self._initial_state(enc, enc_lens)
        embedded = self.dropout(self.embedding(tokens_in))  # (B, U, E)
        logits = []
        for position in range(tokens_in.size(1)):
            step_logits, state = self._step(embedded[:, position], state)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    def loss(self, enc: Tensor, enc_lens: Tensor, tokens: Tensor, token_lens: Tensor) -> Tensor:
        """Label-smoothed cross-entropy of ``tokens (B, U)`` (padded with -1) followed by EOS.

        Inputs are ``EOS + tokens``, targets ``tokens + EOS``; summed over tokens and divided
        by B, like the CTC loss, so the two are on the same scale when interpolated.
        """
        batch = tokens.size(0)
        positions = torch.arange(tokens.size(1) + 1, device=tokens.device)  # (U + 1,)
        padded = nn.functional.pad(tokens, (0, 1), value=IGNORE_ID)  # (B, U + 1)
        targets = torch.where(positions == token_lens[:, None], EOS_ID, padded)
        targets = targets.masked_fill(positions > token_lens[:, None], IGNORE_ID)
        inputs = torch.where(tokens < 0, EOS_ID, tokens)  # padding positions only feed ignored targets
        tokens_in = torch.cat([torch.full_like(tokens[:, :1], EOS_ID), inputs], dim=1)
        logits = self.forward(enc, enc_lens, tokens_in)  # (B, U + 1, V)
        total = nn.functional.cross_entropy(
            logits.float().reshape(-1, self.vocab_size),
            targets.reshape(-1),
            ignore_index=IGNORE_ID,
            label_smoothing=self.cfg.label_smoothing,
            reduction="sum",
        )
        return total / batch

    def init_state(self, enc: Tensor, enc_lens: Tensor) -> DecoderState:
        """Search state for ONE utterance ``enc (1, T', D)``, before any token is consumed."""
        if enc.size(0) != 1:
            raise ValueError(f"init_state takes one utterance, got a batch of {enc.size(0)}")
        return self._initial_state(enc, enc_lens)

    def score(self, prefixes: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """Log-probs ``(K, V)`` of the token after each prefix ``(K, U)``; consumes ``prefixes[:, -1]``.

        ``state`` must already have consumed ``prefixes[:, :-1]`` (one ``score`` call per
        token, starting from ``init_state`` with prefixes ``[[EOS]]``). Call it in eval mode.
        """
        logits, new_state = self._step(self.embedding(prefixes[:, -1]), state)
        return torch.log_softmax(logits.float(), dim=-1), new_state

    def select(self, state: DecoderState, beam_ids: Tensor) -> DecoderState:
        """Reorder or duplicate beams: row ``k`` of the result is row ``beam_ids[k]`` of ``state``."""

        def pick(t: Tensor) -> Tensor:
            return t.index_select(0, beam_ids.to(t.device))

        shared = state.enc.size(0) == 1
        return DecoderState(
            hidden=[pick(h) for h in state.hidden],
            cell=[pick(c) for c in state.cell],
            context=pick(state.context),
            weights=pick(state.weights),
            enc=state.enc if shared else pick(state.enc),
            keys=state.keys if shared else pick(state.keys),
            mask=state.mask if shared else pick(state.mask),
        )
