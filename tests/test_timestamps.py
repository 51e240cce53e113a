"""Word timings: text from pieces, monotonic times inside the audio, confidences in [0, 1]."""

import itertools
import math

import pytest
import torch

from asr.config import SearchConfig
from asr.decoding.ctc_prefix_beam import ctc_prefix_beam_search
from asr.decoding.hypothesis import Hypothesis, sequence_confidence
from asr.decoding.timestamps import ctc_align, word_timings

CHAR_PIECES = ["<blank>", "<eos>", "<unk>", "▁", "h", "i", "y", "o"]
BPE_PIECES = ["<blank>", "<eos>", "<unk>", "▁hi", "▁yo", "o", "▁"]


def test_char_pieces_give_words_with_exact_times():
    hyp = Hypothesis(
        tokens=[4, 5, 3, 6, 7],
        score=0.0,
        token_log_probs=[math.log(0.9), math.log(0.5), 0.0, math.log(0.8), math.log(0.6)],
        token_frames=[2, 3, 5, 8, 9],
        num_frames=12,
    )
    words = word_timings(hyp, CHAR_PIECES, frame_shift_s=0.04)
    assert [w.word for w in words] == ["hi", "yo"]
    assert [(w.start_s, w.end_s) for w in words] == [(0.08, 0.16), (0.32, 0.4)]
    assert [w.confidence for w in words] == pytest.approx([0.7, 0.7])


def test_bpe_pieces_start_words_and_skip_specials():
    hyp = Hypothesis(tokens=[3, 2, 4, 5, 6], score=0.0, token_log_probs=[0.0] * 5, token_frames=[0, 1, 4, 6, 7])
    words = word_timings(hyp, BPE_PIECES, frame_shift_s=0.1, num_frames=8)
    assert [(w.word, w.start_s, w.end_s) for w in words] == [("hi", 0.0, 0.1), ("yoo", 0.4, 0.7)]


def test_last_word_ends_inside_the_audio():
    hyp = Hypothesis(tokens=[3], score=0.0, token_log_probs=[0.0], token_frames=[9], num_frames=10)
    assert word_timings(hyp, BPE_PIECES, frame_shift_s=0.04)[0].end_s == pytest.approx(0.4)


def test_prefix_beam_words_are_monotonic_and_inside_the_audio():
    gen = torch.Generator().manual_seed(0)
    log_probs = (torch.randn(60, len(CHAR_PIECES), generator=gen) * 3).log_softmax(-1)
    for hyp in ctc_prefix_beam_search(log_probs, SearchConfig(beam_size=8, nbest=8)).hypotheses:
        words = word_timings(hyp, CHAR_PIECES, frame_shift_s=0.04)
        times = [t for w in words for t in (w.start_s, w.end_s)]
        assert times == sorted(times)
        assert all(0.0 <= t <= 60 * 0.04 + 1e-9 for t in times)
        assert all(0.0 <= w.confidence <= 1.0 for w in words)
        assert 0.0 <= hyp.confidence <= 1.0


def test_forced_alignment_finds_the_peaks():
    probs = torch.full((8, 5), 0.025)
    for t, label in enumerate([0, 3, 3, 0, 0, 4, 0, 3]):
        probs[t, label] = 0.9
    probs[2, 3] = 0.95
    frames, log_probs = ctc_align(probs.log(), [3, 4, 3])
    assert frames == [2, 5, 7]
    assert log_probs == pytest.approx([math.log(0.95), math.log(0.9), math.log(0.9)])
    assert all(a < b for a, b in itertools.pairwise(frames))


def test_forced_alignment_separates_repeated_tokens():
    probs = torch.full((5, 4), 0.1)
    for t, label in enumerate([2, 2, 2, 2, 2]):
        probs[t, label] = 0.7
    frames, _ = ctc_align(probs.log(), [2, 2])
    assert frames[0] < frames[1]


def test_sequence_confidence_is_a_geometric_mean_in_unit_range():
    assert sequence_confidence([math.log(0.5), math.log(0.125)]) == pytest.approx(0.25)
    assert sequence_confidence([]) == 1.0
    assert sequence_confidence([0.3]) == 1.0
