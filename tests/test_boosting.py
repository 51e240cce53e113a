"""Phrase boosting: bonus per matched token, kept on completion, refunded when abandoned."""

import pytest
import torch

from asr.config import SearchConfig
from asr.decoding.boosting import PhraseBooster
from asr.decoding.ctc_prefix_beam import ctc_prefix_beam_search


def run(booster: PhraseBooster, tokens: list[int]) -> float:
    state, total = booster.initial_state(), 0.0
    for token in tokens:
        delta, state = booster.advance(state, token)
        total += delta
    return total + booster.finish(state)


def test_completed_phrase_keeps_its_bonus():
    assert run(PhraseBooster([([5, 6, 7], 1.5)]), [4, 5, 6, 7, 4]) == pytest.approx(4.5)


def test_abandoned_prefix_is_refunded():
    booster = PhraseBooster([([5, 6, 7], 1.5)])
    assert run(booster, [5, 6, 4]) == pytest.approx(0.0)
    assert run(booster, [5, 6]) == pytest.approx(0.0)  # unfinished at the end of the utterance


def test_restart_inside_a_failed_match_still_finds_the_phrase():
    assert run(PhraseBooster([([5, 6], 1.0)]), [5, 5, 6]) == pytest.approx(2.0)


def test_longer_phrase_sharing_a_prefix_keeps_the_shorter_bonus():
    booster = PhraseBooster([([5, 6], 1.0), ([5, 6, 7, 8], 1.0)])
    assert run(booster, [5, 6, 7, 4]) == pytest.approx(2.0)
    assert run(booster, [5, 6, 7, 8]) == pytest.approx(4.0)


def test_deltas_agree_with_advance_for_every_token():
    booster = PhraseBooster([([2, 3, 4], 1.0), ([3, 5], 2.0)])
    _, state = booster.advance(booster.initial_state(), 2)
    row = booster.deltas(state, 8)
    assert row.tolist() == [booster.advance(state, t)[0] for t in range(8)]


def test_boosting_raises_the_phrase_rank_in_prefix_beam():
    probs = torch.full((5, 6), 0.02)
    for t, (label, p) in enumerate([(3, 0.8), (0, 0.9), (4, 0.5), (0, 0.9), (0, 0.9)]):
        probs[t, label] = p
    probs[2, 5] = 0.4  # the boosted phrase [3, 5] is a close second
    log_probs = (probs / probs.sum(-1, keepdim=True)).log()
    cfg = SearchConfig(beam_size=6, nbest=6)
    plain = [h.tokens for h in ctc_prefix_beam_search(log_probs, cfg).hypotheses]
    boosted = ctc_prefix_beam_search(log_probs, cfg, boost=PhraseBooster([([3, 5], 0.5)]))
    assert plain.index([3, 5]) > 0
    assert boosted.best.tokens == [3, 5]
    refunded = next(h for h in boosted.hypotheses if h.tokens == [3, 4])
    assert refunded.scores["boost"] == pytest.approx(0.0)  # entered the phrase with 3, left it with 4
