"""CTC greedy and prefix beam search on hand-built log-probs, against brute-force oracles."""

import itertools
import math

import pytest
import torch

from asr.config import SearchConfig
from asr.decoding.boosting import PhraseBooster
from asr.decoding.ctc_greedy import ctc_greedy_search, ctc_greedy_search_batch
from asr.decoding.ctc_prefix_beam import CTCPrefixBeamSearch, ctc_prefix_beam_search
from asr.decoding.ngram import NgramLM
from asr.decoding.search import search
from asr.errors import ConfigError

PIECES = ["<blank>", "<eos>", "<unk>", "▁", "a", "b", "c"]  # char-style: ▁ separates words


def peaked_log_probs(frame_labels: list[int], vocab_size: int, peak: float = 0.9) -> torch.Tensor:
    """(T, V): each frame puts `peak` on its label and shares the rest evenly."""
    probs = torch.full((len(frame_labels), vocab_size), (1 - peak) / (vocab_size - 1))
    probs[torch.arange(len(frame_labels)), torch.tensor(frame_labels)] = peak
    return probs.log()


def random_log_probs(frames: int, vocab_size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(frames, vocab_size, generator=gen) * 2).log_softmax(-1)


def ctc_log_likelihood(log_probs: torch.Tensor, labels: list[int], blank: int = 0) -> float:
    """Forward algorithm over the extended label sequence."""
    ext = [blank]
    for y in labels:
        ext += [y, blank]
    alpha = [-math.inf] * len(ext)
    alpha[0] = float(log_probs[0, blank])
    if len(ext) > 1:
        alpha[1] = float(log_probs[0, ext[1]])
    for t in range(1, log_probs.size(0)):
        new = []
        for s, label in enumerate(ext):
            terms = [alpha[s]] + ([alpha[s - 1]] if s >= 1 else [])
            if s >= 2 and label != blank and label != ext[s - 2]:
                terms.append(alpha[s - 2])
            best = max(terms)
            total = best if best == -math.inf else best + math.log(sum(math.exp(x - best) for x in terms))
            new.append(total + float(log_probs[t, label]))
        alpha = new
    tail = alpha[-2:] if labels else alpha[-1:]
    best = max(tail)
    return best if best == -math.inf else best + math.log(sum(math.exp(x - best) for x in tail))


def all_label_sequences(max_len: int, labels: list[int]) -> list[list[int]]:
    return [list(s) for n in range(max_len + 1) for s in itertools.product(labels, repeat=n)]


def test_greedy_collapses_repeats_and_drops_blanks():
    log_probs = peaked_log_probs(frame_labels=[1, 1, 0, 1, 2, 2], vocab_size=3)
    hyp = ctc_greedy_search(log_probs).best
    assert hyp.tokens == [1, 1, 2]
    assert hyp.token_frames == [0, 3, 4]
    assert hyp.token_log_probs == pytest.approx([math.log(0.9)] * 3)


def test_greedy_batch_respects_lengths():
    a = peaked_log_probs([1, 0, 2, 2], vocab_size=3)
    b = peaked_log_probs([2, 2, 1, 1], vocab_size=3)
    results = ctc_greedy_search_batch(torch.stack([a, b]), torch.tensor([4, 2]))
    assert [r.best.tokens for r in results] == [[1, 2], [2]]


@pytest.mark.parametrize("seed", range(4))
def test_prefix_beam_matches_brute_force_on_tiny_vocab(seed):
    log_probs = random_log_probs(frames=5, vocab_size=3, seed=seed)
    candidates = all_label_sequences(max_len=5, labels=[1, 2])
    expected = max(candidates, key=lambda y: ctc_log_likelihood(log_probs, y))
    hyp = ctc_prefix_beam_search(log_probs, SearchConfig(beam_size=64, prune_threshold=0.0)).best
    assert hyp.tokens == expected
    assert hyp.score == pytest.approx(ctc_log_likelihood(log_probs, expected), abs=1e-5)


def test_beam_one_equals_greedy_on_peaked_input():
    log_probs = peaked_log_probs([0, 4, 4, 0, 5, 3, 3, 6, 0, 6, 6], vocab_size=len(PIECES))
    greedy = ctc_greedy_search(log_probs).best
    beam = ctc_prefix_beam_search(log_probs, SearchConfig(beam_size=1)).best
    assert beam.tokens == greedy.tokens == [4, 5, 3, 6, 6]
    assert beam.token_frames == greedy.token_frames


def test_chunked_accept_equals_whole_accept():
    log_probs = random_log_probs(frames=30, vocab_size=len(PIECES), seed=3)
    cfg = SearchConfig(beam_size=6, nbest=4)
    whole = CTCPrefixBeamSearch(cfg, pieces=PIECES)
    whole.accept(log_probs)
    chunked = CTCPrefixBeamSearch(cfg, pieces=PIECES)
    for chunk in (log_probs[:7], log_probs[7:19], log_probs[19:]):
        chunked.accept(chunk)
        assert chunked.partial().hypotheses
    assert chunked.finalize() == whole.finalize()


def test_token_frames_are_increasing_and_inside_the_utterance():
    log_probs = random_log_probs(frames=40, vocab_size=len(PIECES), seed=7)
    for hyp in ctc_prefix_beam_search(log_probs, SearchConfig(beam_size=8, nbest=8)).hypotheses:
        assert len(hyp.token_frames) == len(hyp.tokens)
        assert all(a < b for a, b in itertools.pairwise(hyp.token_frames))
        assert all(0 <= f < 40 for f in hyp.token_frames)
        assert 0.0 <= hyp.confidence <= 1.0


def _word_lm(favour: str) -> NgramLM:
    """Unigram LM over words 'ab' and 'ac' (plus </s>), favouring `favour`."""
    other = "ac" if favour == "ab" else "ab"
    table: dict[tuple[str, ...], tuple[float, float]] = {
        ("</s>",): (-0.3, 0.0),
        ("<s>",): (-99.0, 0.0),
        (favour,): (-0.1, 0.0),
        (other,): (-3.0, 0.0),
    }
    return NgramLM([table])


def _ambiguous_log_probs() -> torch.Tensor:
    """'a' then a near tie between 'b' (slightly ahead) and 'c'."""
    probs = torch.full((4, len(PIECES)), 0.01)
    probs[0, 4] = 0.9
    probs[1, 0] = 0.9
    probs[2, 5], probs[2, 6] = 0.46, 0.44
    probs[3, 0] = 0.9
    return (probs / probs.sum(-1, keepdim=True)).log()


def test_lm_weight_zero_equals_no_lm():
    log_probs = _ambiguous_log_probs()
    plain = ctc_prefix_beam_search(log_probs, SearchConfig(beam_size=4, nbest=3))
    weightless = ctc_prefix_beam_search(
        log_probs, SearchConfig(beam_size=4, nbest=3, lm_weight=0.0), pieces=PIECES, lm=_word_lm("ac")
    )
    assert weightless == plain


def test_word_lm_favouring_a_word_changes_the_result():
    log_probs = _ambiguous_log_probs()
    assert ctc_prefix_beam_search(log_probs, SearchConfig(beam_size=4)).best.tokens == [4, 5]
    cfg = SearchConfig(beam_size=4, lm_weight=1.0, lm_unit="word")
    fused = ctc_prefix_beam_search(log_probs, cfg, pieces=PIECES, lm=_word_lm("ac")).best
    assert fused.tokens == [4, 6]
    assert fused.scores["lm"] == pytest.approx((-0.1 - 0.3) * math.log(10))  # last word scored at finalize


def test_token_lm_favouring_a_piece_changes_the_result():
    table: dict[tuple[str, ...], tuple[float, float]] = {
        ("</s>",): (-0.5, 0.0),
        ("<s>",): (-99.0, 0.0),
        ("a",): (-0.5, 0.0),
        ("b",): (-3.0, 0.0),
    }
    table[("c",)] = (-0.2, 0.0)
    cfg = SearchConfig(beam_size=4, lm_weight=1.0, lm_unit="token")
    fused = ctc_prefix_beam_search(_ambiguous_log_probs(), cfg, pieces=PIECES, lm=NgramLM([table])).best
    assert fused.tokens == [4, 6]


def test_boosting_raises_the_boosted_phrase():
    log_probs = _ambiguous_log_probs()
    cfg = SearchConfig(beam_size=4, nbest=4)
    boosted = ctc_prefix_beam_search(log_probs, cfg, boost=PhraseBooster([([4, 6], 1.0)]))
    assert boosted.best.tokens == [4, 6]
    assert boosted.best.scores["boost"] == pytest.approx(2.0)


def test_search_needs_a_decoder_for_attention_methods():
    log_probs = random_log_probs(5, 4, seed=0).unsqueeze(0)
    with pytest.raises(ConfigError, match="decoder"):
        search(log_probs, torch.tensor([5]), SearchConfig(method="joint"))


def test_search_dispatches_prefix_beam_per_utterance():
    a, b = random_log_probs(6, 4, seed=1), random_log_probs(6, 4, seed=2)
    cfg = SearchConfig(method="ctc_prefix_beam", beam_size=4)
    batch = search(torch.stack([a, b]), torch.tensor([6, 4]), cfg)
    assert batch[0] == ctc_prefix_beam_search(a, cfg)
    assert batch[1] == ctc_prefix_beam_search(b[:4], cfg)
