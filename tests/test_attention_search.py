"""Label-synchronous search (attention, joint, rescoring) with fake scorers and brute-force oracles."""

import itertools
import math

import pytest
import torch

from asr.config import SearchConfig
from asr.decoding.attention_beam import AttentionBeamSearch
from asr.decoding.ctc_prefix_beam import ctc_prefix_beam_search
from asr.decoding.ctc_prefix_score import CTCPrefixScorer
from asr.decoding.rescoring import attention_rescore, decoder_scores
from asr.decoding.search import search

BLANK, EOS = 0, 1
VOCAB = 4  # blank, eos, two labels


class TableDecoder:
    """Deterministic fake decoder: next-token log-probs seeded by the prefix.

    Its state is the list of prefixes it has consumed, so a wrong `select` or a skipped
    `score` call fails loudly.
    """

    def __init__(self, seed: int, never_eos: bool = False):
        self.seed, self.never_eos = seed, never_eos

    def log_probs(self, prefix: tuple[int, ...]) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1000 + hash(prefix) % 997)
        logits = torch.randn(VOCAB, generator=gen) * 2
        logits[BLANK] = -1e9
        if self.never_eos:
            logits[EOS] = float("-inf")
        return logits.log_softmax(-1)

    def init_state(self, enc, enc_lens):
        return [()]

    def score(self, prefixes, state):
        rows = [tuple(p) for p in prefixes.tolist()]
        for consumed, row in zip(state, rows, strict=True):
            assert consumed == row[:-1], "state out of step with prefixes"
        return torch.stack([self.log_probs(r) for r in rows]), rows

    def select(self, state, beam_ids):
        return [state[i] for i in beam_ids.tolist()]


def sequence_score(decoder: TableDecoder, labels: tuple[int, ...]) -> float:
    prefix: tuple[int, ...] = (EOS,)
    total = 0.0
    for y in (*labels, EOS):
        total += float(decoder.log_probs(prefix)[y])
        prefix = (*prefix, y)
    return total


def random_log_probs(frames: int, seed: int, eos_mass: bool = True) -> torch.Tensor:
    """(T, V) CTC log-posteriors; without `eos_mass`, <eos> is (as after CTC training) never emitted."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(frames, VOCAB, generator=gen) * 2
    if not eos_mass:
        logits[:, EOS] = -30.0
    return logits.log_softmax(-1)


def brute_prefix_log_prob(log_probs: torch.Tensor, prefix: list[int]) -> float:
    """log P(labelling starts with prefix) by summing over all frame paths."""
    total = 0.0
    for path in itertools.product(range(VOCAB), repeat=log_probs.size(0)):
        labels = [s for i, s in enumerate(path) if s != BLANK and (i == 0 or s != path[i - 1])]
        if labels[: len(prefix)] == prefix:
            total += math.exp(sum(float(log_probs[t, s]) for t, s in enumerate(path)))
    return math.log(total)


ENC = torch.zeros(1, 4, 2)
ENC_LENS = torch.tensor([4])


def test_ctc_prefix_scorer_matches_brute_force_prefix_probability():
    log_probs = random_log_probs(frames=5, seed=0)
    scorer = CTCPrefixScorer(log_probs, blank_id=BLANK, eos_id=EOS)
    state = scorer.init_state()
    first, state = scorer.score_partial(torch.tensor([[EOS]]), torch.tensor([[2, 3]]), state)
    assert first[0].tolist() == pytest.approx([brute_prefix_log_prob(log_probs, [y]) for y in (2, 3)], abs=1e-5)
    state = scorer.select(state, torch.tensor([0, 0]))
    prefixes, candidates = torch.tensor([[EOS, 2], [EOS, 3]]), torch.tensor([[3, 2], [3, 2]])
    second, _ = scorer.score_partial(prefixes, candidates, state)
    for k, first_label in enumerate((2, 3)):
        got = [float(second[k, c]) + brute_prefix_log_prob(log_probs, [first_label]) for c in range(2)]
        want = [brute_prefix_log_prob(log_probs, [first_label, int(y)]) for y in candidates[k]]
        assert got == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_attention_beam_finds_the_best_sequence(seed):
    decoder = TableDecoder(seed)
    beam = AttentionBeamSearch({"decoder": decoder}, {"decoder": 1.0}, beam_size=16, eos_id=EOS, forbidden_ids=[0])
    result = beam(ENC, ENC_LENS, max_len=4, vocab_size=VOCAB).best
    sequences = [s for n in range(5) for s in itertools.product([2, 3], repeat=n)]
    expected = max(sequences, key=lambda s: sequence_score(decoder, s))
    assert result.tokens == list(expected)
    assert result.score == pytest.approx(sequence_score(decoder, expected), abs=1e-4)


def test_attention_beam_stops_at_max_length_without_eos():
    beam = AttentionBeamSearch({"decoder": TableDecoder(0, never_eos=True)}, {"decoder": 1.0}, beam_size=3, eos_id=EOS)
    nbest = beam(ENC, ENC_LENS, max_len=6, vocab_size=VOCAB)
    assert [len(h.tokens) for h in nbest.hypotheses] == [6]


@pytest.mark.parametrize("seed", range(3))
def test_joint_with_ctc_weight_one_gives_the_prefix_beam_result(seed):
    log_probs = random_log_probs(frames=5, seed=seed, eos_mass=False)
    cfg = SearchConfig(method="joint", ctc_weight=1.0, beam_size=32, prune_threshold=0.0)
    joint = search(log_probs[None], torch.tensor([5]), cfg, decoder=TableDecoder(seed), enc=ENC, enc_lens=ENC_LENS)
    prefix = ctc_prefix_beam_search(log_probs, SearchConfig(beam_size=64, prune_threshold=0.0))
    assert joint[0].best.tokens == prefix.best.tokens
    assert joint[0].best.score == pytest.approx(prefix.best.score, abs=1e-4)


def test_attention_hypotheses_get_ctc_aligned_frames():
    log_probs = torch.full((6, VOCAB), 0.02).log()
    for t, label in enumerate([0, 2, 0, 0, 3, 0]):
        log_probs[t, label] = math.log(0.94)
    cfg = SearchConfig(method="attention_beam", beam_size=4, max_len_ratio=0.5)
    hyp = search(log_probs[None], torch.tensor([6]), cfg, decoder=TableDecoder(1), enc=ENC, enc_lens=ENC_LENS)[0].best
    assert len(hyp.token_frames) == len(hyp.tokens) <= 3
    assert all(a < b for a, b in itertools.pairwise(hyp.token_frames))
    assert hyp.num_frames == 6 and 0.0 <= hyp.confidence <= 1.0


def test_decoder_scores_batch_equals_one_by_one():
    decoder = TableDecoder(2)
    hyps = [[2, 3, 3], [3], []]
    batched = decoder_scores(decoder, ENC, ENC_LENS, hyps, EOS)
    assert batched == pytest.approx([sequence_score(decoder, tuple(h)) for h in hyps], abs=1e-5)


def test_rescoring_weights_ctc_against_decoder():
    log_probs = random_log_probs(frames=5, seed=4)
    decoder = TableDecoder(4)
    first = ctc_prefix_beam_search(log_probs, SearchConfig(beam_size=8, nbest=8, prune_threshold=0.0))
    ctc_only = attention_rescore(first, decoder, ENC, ENC_LENS, ctc_weight=1.0, eos_id=EOS)
    assert [h.tokens for h in ctc_only.hypotheses] == [h.tokens for h in first.hypotheses]
    dec_only = attention_rescore(first, decoder, ENC, ENC_LENS, ctc_weight=0.0, eos_id=EOS)
    expected = max(first.hypotheses, key=lambda h: sequence_score(decoder, tuple(h.tokens)))
    assert dec_only.best.tokens == expected.tokens
