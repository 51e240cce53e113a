"""Attention rescoring of a CTC prefix-beam n-best: cheap joint scoring for finals.

The decoder scores every hypothesis teacher-forced, batched over the n-best, through the same
``init_state / score / select`` surface the beam search uses, so no second decoder API exists.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from asr.decoding.hypothesis import NBest
from asr.decoding.scorers import Scorer


def decoder_scores(decoder: Scorer, enc: Tensor, enc_lens: Tensor, hyps: list[list[int]], eos_id: int) -> list[float]:
    """Teacher-forced ``log p(tokens, <eos> | enc)`` of each token list, as one batch of N beams.

    enc: ``(1, T', D)`` for one utterance. Shorter hypotheses are padded with ``<eos>``; scores
    past their end are ignored.
    """
    if not hyps:
        return []
    num = len(hyps)
    longest = max(len(h) for h in hyps)
    targets = torch.full((num, longest + 1), eos_id, dtype=torch.long)  # tokens then <eos>
    for i, h in enumerate(hyps):
        targets[i, : len(h)] = torch.tensor(h, dtype=torch.long)
    lens = torch.tensor([len(h) for h in hyps])
    inputs = torch.cat([torch.full((num, 1), eos_id, dtype=torch.long), targets[:, :-1]], dim=1)  # <sos> first
    state = decoder.select(decoder.init_state(enc, enc_lens), torch.zeros(num, dtype=torch.long))
    totals = torch.zeros(num, dtype=torch.float64)
    with torch.no_grad():
        for u in range(longest + 1):
            log_probs, state = decoder.score(inputs[:, : u + 1], state)  # (N, V)
            step = log_probs.double().gather(1, targets[:, u : u + 1]).squeeze(1)
            totals += torch.where(u <= lens, step, torch.zeros_like(step))
    return totals.tolist()


def attention_rescore(
    nbest: NBest, decoder: Scorer, enc: Tensor, enc_lens: Tensor, *, ctc_weight: float, eos_id: int
) -> NBest:
    """Re-rank ``nbest`` by ``ctc_weight * ctc + (1 - ctc_weight) * decoder`` (+ its LM/bonus/boost terms).

    The CTC part is ``hyp.scores["ctc"]``; whatever else the first pass added to ``score``
    (LM fusion, length bonus, boosting) is kept unchanged.
    """
    hyps = nbest.hypotheses
    dec = decoder_scores(decoder, enc, enc_lens, [h.tokens for h in hyps], eos_id)
    rescored = []
    for hyp, dec_score in zip(hyps, dec, strict=True):
        ctc = hyp.scores.get("ctc", hyp.score)
        extra = hyp.score - ctc
        total = ctc_weight * ctc + (1.0 - ctc_weight) * dec_score + extra
        rescored.append(replace(hyp, score=total, scores={**hyp.scores, "decoder": dec_score}))
    rescored.sort(key=lambda h: -h.score)
    return NBest(rescored)
