"""Label-synchronous beam search over weighted scorers (decoder, CTC prefix, LM, bonuses).

Each step adds ``weight * score`` over ``{name: scorer}``; nothing in the loop knows which
scorers exist. Full scorers (:class:`Scorer`) score all V tokens; partial scorers (the CTC prefix
scorer) only the ``pre_beam_size`` best candidates of the weighted full scores, or all V when
no full scorer carries weight. The output is capped at ``max_len`` tokens so a model that never
emits ``<eos>`` (e.g. on silence) still terminates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from asr.decoding.hypothesis import Hypothesis, NBest, sequence_confidence
from asr.decoding.scorers import PartialScorer, Scorer

_END_WINDOW = 3  # end detection (ESPnet's end_detect): lengths looked back over...
_END_MARGIN = -10.0  # ...whose best ended hypothesis trails the overall best by this many nats


@dataclass
class _Finished:
    tokens: list[int]
    score: float
    token_log_probs: list[float]


class AttentionBeamSearch:
    """Beam search over ``scorers`` with ``weights``; zero-weight scorers should be left out."""

    def __init__(
        self,
        scorers: Mapping[str, Scorer | PartialScorer],
        weights: Mapping[str, float],
        *,
        beam_size: int,
        eos_id: int,
        nbest: int = 1,
        pre_beam_size: int | None = None,
        length_norm: bool = False,
        forbidden_ids: Sequence[int] = (),
    ):
        missing = set(scorers) - set(weights)
        if missing:
            raise ValueError(f"no weight for scorer(s) {sorted(missing)}")
        self.full: dict[str, Scorer] = {}
        self.partial: dict[str, PartialScorer] = {}
        for name, scorer in scorers.items():
            if isinstance(scorer, PartialScorer):
                self.partial[name] = scorer
            else:
                self.full[name] = scorer
        self.weights = dict(weights)
        self.beam_size, self.eos_id, self.nbest = beam_size, eos_id, nbest
        self.pre_beam_size = pre_beam_size or max(beam_size, int(1.5 * beam_size))
        self.length_norm = length_norm
        self.forbidden_ids = list(forbidden_ids)  # never emitted (the CTC blank)

    def __call__(self, enc: Tensor, enc_lens: Tensor, max_len: int, vocab_size: int) -> NBest:
        """Search one utterance ``enc (1, T', D)``; at most ``max_len`` tokens per hypothesis."""
        states = {n: self._scorer(n).init_state(enc, enc_lens) for n in [*self.full, *self.partial]}
        prefixes = torch.full((1, 1), self.eos_id, dtype=torch.long)  # (K, U) starting with <sos>
        scores = torch.zeros(1, dtype=torch.float64)  # (K,)
        token_lps: list[list[float]] = [[]]
        finished: list[_Finished] = []
        for step in range(max_len + 1):
            candidates, cand_scores = self._expand(prefixes, states, vocab_size)  # (K, C) each
            if step == max_len:  # only <eos> may follow a full-length hypothesis
                cand_scores = cand_scores.masked_fill(candidates != self.eos_id, float("-inf"))
            posteriors = cand_scores.log_softmax(dim=-1)  # the token's share of the beam's mass
            totals = (scores[:, None] + cand_scores.double()).view(-1)
            top = totals.topk(min(self.beam_size, totals.numel()))
            beam_ids, columns, running = [], [], []
            for flat, total in zip(top.indices.tolist(), top.values.tolist(), strict=True):
                if total == float("-inf"):
                    continue
                k, col = divmod(flat, candidates.size(1))
                token = int(candidates[k, col])
                lps = [*token_lps[k], float(posteriors[k, col])]
                if token == self.eos_id:
                    finished.append(_Finished(prefixes[k, 1:].tolist(), total, lps[:-1]))
                else:
                    beam_ids.append(k)
                    columns.append(col)
                    running.append((token, total, lps))
            if not running or self._ended(finished, step + 1):
                break
            ids = torch.tensor(beam_ids)
            tokens = candidates[ids, torch.tensor(columns)]
            prefixes = torch.cat([prefixes[ids], tokens[:, None]], dim=1)
            scores = torch.tensor([r[1] for r in running], dtype=torch.float64)
            token_lps = [r[2] for r in running]
            states = {n: self._scorer(n).select(st, ids) for n, st in states.items()}
        if not finished:  # every hypothesis hit -inf (e.g. <eos> impossible): keep the running ones
            finished = [
                _Finished(p[1:].tolist(), float(s), lp) for p, s, lp in zip(prefixes, scores, token_lps, strict=True)
            ]
        return NBest([self._hypothesis(f) for f in self._rank(finished)[: self.nbest]])

    def _scorer(self, name: str) -> Scorer | PartialScorer:
        return self.full[name] if name in self.full else self.partial[name]

    def _expand(self, prefixes: Tensor, states: dict[str, Any], vocab_size: int) -> tuple[Tensor, Tensor]:
        """Candidates ``(K, C)`` and their weighted step scores ``(K, C)``; updates ``states``."""
        k = prefixes.size(0)
        full = torch.zeros(k, vocab_size)
        for name, full_scorer in self.full.items():
            step_scores, states[name] = full_scorer.score(prefixes, states[name])
            full += self.weights[name] * step_scores.float().to(full.device)
        if self.forbidden_ids:
            full[:, self.forbidden_ids] = float("-inf")
        if not self.partial:
            return torch.arange(vocab_size).expand(k, -1), full
        if any(self.weights[n] != 0.0 for n in self.full):
            candidates = full.topk(min(self.pre_beam_size, vocab_size), dim=-1).indices  # (K, C)
        else:
            candidates = torch.arange(vocab_size).expand(k, -1)
        cand_scores = full.gather(1, candidates)
        for name, partial_scorer in self.partial.items():
            step_scores, states[name] = partial_scorer.score_partial(prefixes, candidates, states[name])
            cand_scores = cand_scores + self.weights[name] * step_scores.float()
        return candidates, cand_scores

    def _ended(self, finished: list[_Finished], length: int) -> bool:
        """Stop when the best hypotheses ending at each of the last few lengths are hopeless."""
        if not finished:
            return False
        best = max(f.score for f in finished)
        hopeless = 0
        for back in range(_END_WINDOW):
            at_length = [f.score for f in finished if len(f.tokens) == length - 1 - back]
            if at_length and max(at_length) - best < _END_MARGIN:
                hopeless += 1
        return hopeless == _END_WINDOW

    def _rank(self, finished: list[_Finished]) -> list[_Finished]:
        if self.length_norm:
            return sorted(finished, key=lambda f: -f.score / (len(f.tokens) + 1))
        return sorted(finished, key=lambda f: -f.score)

    def _hypothesis(self, f: _Finished) -> Hypothesis:
        score = f.score / (len(f.tokens) + 1) if self.length_norm else f.score
        return Hypothesis(
            tokens=f.tokens,
            score=score if math.isfinite(score) else float("-inf"),
            token_log_probs=f.token_log_probs,
            token_frames=[],
            confidence=sequence_confidence(f.token_log_probs),
            scores={"total": f.score},
        )
