"""One entry point for every search method, dispatching on ``SearchConfig.method``.

The caller (inference) runs the encoder once, loads the n-gram once (``ngram.load_arpa``) and
tokenizes boost phrases; this module only searches, and never reads files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from asr.config import SearchConfig
from asr.decoding.attention_beam import AttentionBeamSearch
from asr.decoding.boosting import PhraseBooster
from asr.decoding.ctc_greedy import ctc_greedy_search_batch
from asr.decoding.ctc_prefix_beam import ctc_prefix_beam_search
from asr.decoding.ctc_prefix_score import CTCPrefixScorer
from asr.decoding.hypothesis import NBest, sequence_confidence
from asr.decoding.ngram import NgramLM
from asr.decoding.rescoring import attention_rescore
from asr.decoding.scorers import (
    BoostScorer,
    LengthBonus,
    NgramFusion,
    NgramScorer,
    PartialScorer,
    Scorer,
    as_scorer,
)
from asr.decoding.timestamps import ctc_align
from asr.errors import ConfigError

_NEEDS_DECODER = ("attention_beam", "joint", "rescoring")


def search(
    log_probs: Tensor,
    lens: Tensor,
    cfg: SearchConfig,
    *,
    pieces: Sequence[str] | None = None,
    decoder: Scorer | None = None,
    enc: Tensor | None = None,
    enc_lens: Tensor | None = None,
    lm: NgramLM | None = None,
    boost: Sequence[tuple[list[int], float]] = (),
) -> list[NBest]:
    """Decode a batch: ``log_probs (B, T', V)`` CTC log-posteriors with ``lens (B,)``.

    ``decoder`` with ``enc (B, T', D)`` / ``enc_lens (B,)`` is needed by attention_beam, joint
    and rescoring. ``lm`` is used when ``cfg.lm_weight != 0`` (word units need ``pieces``).
    ``boost`` is ``[(token_ids, bonus_per_token), ...]``.
    """
    _check(cfg, decoder, enc, enc_lens, lm, pieces)
    lm = lm if cfg.lm_weight != 0.0 else None
    booster = PhraseBooster(boost) if boost else None
    if cfg.method == "ctc_greedy":
        return ctc_greedy_search_batch(log_probs, lens, blank_id=cfg.blank_id)
    results = []
    for b, length in enumerate(lens.tolist()):
        utt_log_probs = log_probs[b, :length]  # (T', V)
        if cfg.method == "ctc_prefix_beam":
            results.append(ctc_prefix_beam_search(utt_log_probs, cfg, pieces=pieces, lm=lm, boost=booster))
            continue
        assert decoder is not None and enc is not None and enc_lens is not None  # checked in _check
        utt_enc, utt_enc_lens = enc[b : b + 1, : int(enc_lens[b])], enc_lens[b : b + 1]
        if cfg.method == "rescoring":
            wide = replace(cfg, nbest=cfg.beam_size)
            first = ctc_prefix_beam_search(utt_log_probs, wide, pieces=pieces, lm=lm, boost=booster)
            rescored = attention_rescore(
                first, decoder, utt_enc, utt_enc_lens, ctc_weight=cfg.ctc_weight, eos_id=cfg.eos_id
            )
            results.append(NBest(rescored.hypotheses[: cfg.nbest]))
            continue
        nbest = _label_synchronous(utt_log_probs, cfg, decoder, utt_enc, utt_enc_lens, pieces, lm, booster)
        results.append(nbest)
    return results


def _label_synchronous(
    log_probs: Tensor,
    cfg: SearchConfig,
    decoder: Scorer,
    enc: Tensor,
    enc_lens: Tensor,
    pieces: Sequence[str] | None,
    lm: NgramLM | None,
    booster: PhraseBooster | None,
) -> NBest:
    """attention_beam / joint for one utterance; token frames come from a CTC forced alignment."""
    vocab_size = log_probs.size(-1)
    scorers: dict[str, Scorer | PartialScorer] = {"decoder": as_scorer(decoder, "decoder")}
    weights = {"decoder": 1.0 - cfg.ctc_weight if cfg.method == "joint" else 1.0}
    if cfg.method == "joint":
        scorers["ctc"] = CTCPrefixScorer(log_probs, blank_id=cfg.blank_id, eos_id=cfg.eos_id)
        weights["ctc"] = cfg.ctc_weight
    units = None
    if lm is not None and pieces is not None:
        fusion = NgramFusion(lm, pieces, cfg.lm_unit)
        scorers["lm"], weights["lm"] = NgramScorer(fusion, cfg.eos_id), cfg.lm_weight
        units = fusion.word_start_mask() if cfg.lm_unit == "word" else None
    if cfg.length_bonus != 0.0:
        scorers["length_bonus"] = LengthBonus(vocab_size, cfg.eos_id, units)
        weights["length_bonus"] = cfg.length_bonus
    if booster is not None:
        scorers["boost"], weights["boost"] = BoostScorer(booster, vocab_size, cfg.eos_id), 1.0
    active = {n: s for n, s in scorers.items() if weights[n] != 0.0}
    beam = AttentionBeamSearch(
        active,
        {n: weights[n] for n in active},
        beam_size=cfg.beam_size,
        eos_id=cfg.eos_id,
        nbest=cfg.nbest,
        pre_beam_size=max(cfg.beam_size, int(cfg.pre_beam_ratio * cfg.beam_size)),
        length_norm=cfg.length_norm,
        forbidden_ids=(cfg.blank_id,),
    )
    max_len = max(1, int(cfg.max_len_ratio * log_probs.size(0)))
    with torch.no_grad():
        nbest = beam(enc, enc_lens, max_len, vocab_size)
    for hyp in nbest.hypotheses:
        hyp.token_frames, ctc_log_probs = ctc_align(log_probs, hyp.tokens, blank_id=cfg.blank_id)
        hyp.num_frames = log_probs.size(0)
        hyp.confidence = sequence_confidence(hyp.token_log_probs or ctc_log_probs)
    return nbest


def _check(
    cfg: SearchConfig,
    decoder: Scorer | None,
    enc: Tensor | None,
    enc_lens: Tensor | None,
    lm: NgramLM | None,
    pieces: Sequence[str] | None,
) -> None:
    if cfg.method in _NEEDS_DECODER and (decoder is None or enc is None or enc_lens is None):
        raise ConfigError(
            f"search method {cfg.method!r} needs an attention decoder and encoder output; this model has "
            "none (CTC-only): use method ctc_greedy or ctc_prefix_beam"
        )
    if cfg.lm_weight != 0.0 and lm is None:
        raise ConfigError("search.lm_weight is set but no n-gram LM was loaded: set search.lm_path (or lm_weight 0)")
    if cfg.lm_weight != 0.0 and pieces is None:
        raise ConfigError("LM fusion needs the tokenizer pieces to map token ids to LM units")
    if cfg.beam_size < 1 or cfg.nbest < 1:
        raise ConfigError(f"search.beam_size and search.nbest must be >= 1, got {cfg.beam_size}, {cfg.nbest}")
