"""Label-synchronous CTC prefix scoring (Watanabe et al. 2017; ESPnet's CTCPrefixScore).

For a prefix ``g`` we keep, per frame t, the log-probability that the first t frames emit
exactly ``g`` ending in a label (``r_n``) or in blank (``r_b``). Extending by a candidate c gives
the prefix probability ``psi(g + c)`` = P(the labelling starts with g + c), and for ``<eos>`` the
full-sequence probability ``r_n(T) + r_b(T)``. The score of c is ``psi(g + c) - psi(g)`` so that
it sums to ``log psi`` along a hypothesis.

The per-frame recursions are linear in probability space, so instead of a Python loop over T
they are closed forms of cumulative sums: ``r_n(t) = X(t) + logcumsumexp_s(phi(s-1) - X(s-1))``
with ``X`` the cumulative log-prob of c. Everything is vectorised over K beams x C candidates,
in float64 because the cumulative sums reach thousands of nats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_FLOOR = -1e4  # log(0) stand-in: keeps cumulative sums finite (exp(-1e4) is 0 in float64 anyway)


@dataclass
class CTCPrefixState:
    """Forward variables of the K current prefixes and of the candidates scored last step."""

    r: Tensor  # (T', 2, K) log p(frames 0..t emit the prefix, ending in label [0] / blank [1])
    psi: Tensor  # (K,) log prefix probability of each current prefix
    cand_tokens: Tensor | None = None  # (K, C) candidates of the last score_partial
    cand_r: Tensor | None = None  # (T', 2, K, C)
    cand_psi: Tensor | None = None  # (K, C)


class CTCPrefixScorer:
    """A :class:`~asr.decoding.scorers.PartialScorer` over one utterance's CTC log-probs ``(T', V)``."""

    def __init__(self, log_probs: Tensor, *, blank_id: int, eos_id: int):
        self.log_probs = log_probs.detach().double().clamp_min(_FLOOR).cpu()  # (T', V)
        self.blank_id, self.eos_id = blank_id, eos_id
        self._blank_cum = self.log_probs[:, blank_id].cumsum(0)  # (T',) all-blank path

    def init_state(self, enc: Tensor | None = None, enc_lens: Tensor | None = None) -> CTCPrefixState:
        """State of the empty prefix (``<sos>``): only all-blank paths, prefix probability 1."""
        num_frames = self.log_probs.size(0)
        r = torch.full((num_frames, 2, 1), _FLOOR, dtype=torch.float64)
        r[:, 1, 0] = self._blank_cum
        return CTCPrefixState(r=r, psi=torch.zeros(1, dtype=torch.float64))

    def score_partial(
        self, prefixes: Tensor, candidates: Tensor, state: CTCPrefixState
    ) -> tuple[Tensor, CTCPrefixState]:
        """Scores ``(K, C)`` of ``candidates (K, C)`` after ``prefixes (K, U)``; see the module doc."""
        r, psi = self._consume(prefixes, state)
        num_frames = self.log_probs.size(0)
        k, c = candidates.shape
        x = self.log_probs[:, candidates.reshape(-1)].view(num_frames, k, c)  # (T', K, C)
        r_sum = torch.logaddexp(r[:, 0], r[:, 1])  # (T', K) prefix ends at frame t
        empty = prefixes.size(1) == 1
        last = prefixes[:, -1:]  # (K, 1)
        # phi(t): mass from which c may start at t+1; a repeated label must pass through blank
        phi = torch.where(candidates == last, r[:, 1, :, None], r_sum[:, :, None])  # (T', K, C)
        start = torch.full((1, k, c), 0.0 if empty else _FLOOR, dtype=torch.float64)
        phi_prev = torch.cat([start, phi[:-1]], dim=0)  # phi(t - 1)
        r_n = _linear_recursion(phi_prev, x)
        r_n_prev = torch.cat([torch.full_like(r_n[:1], _FLOOR), r_n[:-1]], dim=0)
        blank = self.log_probs[:, self.blank_id, None, None].expand(num_frames, k, c)
        r_b = _linear_recursion(r_n_prev, blank)
        new_psi = torch.logsumexp(phi_prev + x, dim=0)  # (K, C)
        is_eos = candidates == self.eos_id
        new_psi = torch.where(is_eos, r_sum[-1, :, None].expand(k, c), new_psi)
        new_psi = new_psi.masked_fill(candidates == self.blank_id, float("-inf"))
        new_state = CTCPrefixState(r, psi, candidates, torch.stack([r_n, r_b], dim=1), new_psi)
        return (new_psi - psi[:, None]).float(), new_state

    def select(self, state: CTCPrefixState, beam_ids: Tensor) -> CTCPrefixState:
        if state.cand_tokens is None or state.cand_r is None or state.cand_psi is None:
            return CTCPrefixState(state.r[:, :, beam_ids], state.psi[beam_ids])
        return CTCPrefixState(
            state.r[:, :, beam_ids],
            state.psi[beam_ids],
            state.cand_tokens[beam_ids],
            state.cand_r[:, :, beam_ids],
            state.cand_psi[beam_ids],
        )

    def _consume(self, prefixes: Tensor, state: CTCPrefixState) -> tuple[Tensor, Tensor]:
        """Forward variables of ``prefixes``: pick, per beam, the candidate it appended last step."""
        if state.cand_tokens is None or state.cand_r is None or state.cand_psi is None:
            return state.r, state.psi
        match = state.cand_tokens == prefixes[:, -1:]  # (K, C)
        if not bool(match.any(dim=1).all()):
            raise ValueError("each prefix must end with a candidate scored by the previous score_partial")
        column = match.float().argmax(dim=1)  # (K,)
        beams = torch.arange(prefixes.size(0))
        return state.cand_r[:, :, beams, column], state.cand_psi[beams, column]


def _linear_recursion(inflow: Tensor, emit: Tensor) -> Tensor:
    """``y(t) = (y(t-1) + inflow(t)) * emit(t)`` in log space, ``y(-1) = 0``, for all t at once.

    inflow, emit: ``(T', ...)`` log values. Closed form: ``y(t) = E(t) + log sum_{s<=t}
    exp(inflow(s) - E(s-1))`` with ``E`` the cumulative sum of ``emit``.
    """
    cum = emit.cumsum(0)
    cum_prev = torch.cat([torch.zeros_like(cum[:1]), cum[:-1]], dim=0)
    return (cum + torch.logcumsumexp(inflow - cum_prev, dim=0)).clamp_min(_FLOOR)
