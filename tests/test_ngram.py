"""ARPA loading and Kneser-Ney estimation: exact back-off scores, normalisation, round trip."""

import math

import pytest

from asr.config import LMConfig
from asr.decoding.ngram import LN10, NgramLM, load_arpa
from asr.errors import CheckpointError, ConfigError
from asr.training.ngram import build_arpa, estimate_ngram, write_arpa

TOY_ARPA = """\\data\\
ngram 1=5
ngram 2=3

\\1-grams:
-1.0\t</s>
-99\t<s>\t-0.5
-0.7\tthe\t-0.3
-1.2\tcat\t-0.2
-2.0\t<unk>

\\2-grams:
-0.2\t<s> the
-0.4\tthe cat
-0.1\tcat </s>

\\end\\
"""

TEXT = ["the cat sat", "the dog sat", "a cat ran", "the cat ran away", "a dog sat on the mat"]


@pytest.fixture
def toy_lm(tmp_path):
    path = tmp_path / "toy.arpa"
    path.write_text(TOY_ARPA)
    return load_arpa(path)


def test_seen_bigram_uses_its_probability(toy_lm):
    logp, state = toy_lm.score(toy_lm.begin_state(), "the")
    assert logp == pytest.approx(-0.2 * LN10)
    assert state == ("the",)


def test_unseen_bigram_backs_off(toy_lm):
    logp, state = toy_lm.score(("cat",), "the")
    assert logp == pytest.approx((-0.2 - 0.7) * LN10)
    assert state == ("the",)


def test_unknown_word_scores_as_unk_and_resets_the_context(toy_lm):
    logp, state = toy_lm.score(("the",), "zebra")
    assert logp == pytest.approx(-2.0 * LN10)
    assert state == ()


def test_sentence_score_includes_end_of_sentence(toy_lm):
    assert toy_lm.sentence_score(["the", "cat"]) == pytest.approx((-0.2 - 0.4 - 0.1) * LN10)


def test_missing_unk_falls_back_to_the_floor():
    lm = NgramLM([{("a",): (-0.5, 0.0), ("</s>",): (-0.5, 0.0)}], oov_log10=-7.0)
    assert lm.score((), "b")[0] == pytest.approx(-7.0 * LN10)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("not arpa\n", ":1:"),
        ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\ta\n\\end\\\n", "promises 2 1-grams"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\nx\ta\n\\end\\\n", ":5:"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\ta\n", "truncated"),
    ],
)
def test_malformed_arpa_names_file_and_line(tmp_path, text, where):
    path = tmp_path / "bad.arpa"
    path.write_text(text)
    with pytest.raises(CheckpointError, match=where):
        load_arpa(path)


def test_missing_arpa_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_arpa(tmp_path / "nope.arpa")


@pytest.mark.parametrize("modified", [True, False])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_context_distribution_sums_to_one(order, modified):
    lm = NgramLM(estimate_ngram(TEXT, LMConfig(order=order, modified=modified)))
    vocab = [w for (w,) in lm.probs[0] if w != "<s>"]
    contexts = [()] + [g for table in lm.probs[:-1] for g in table if g[-1] != "</s>"]
    for context in contexts:
        total = sum(math.exp(lm.score(context, w)[0]) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-6), context


PRUNE_TEXT = TEXT * 2 + ["the cat sat on the mat", "a dog ran away", "the mat sat", "on the cat a dog"]


@pytest.mark.parametrize(("order", "min_counts"), [(2, (2,)), (3, (1, 2)), (3, (2, 3)), (4, (2, 2, 3))])
def test_pruned_model_is_smaller_and_still_sums_to_one(order, min_counts):
    full = NgramLM(estimate_ngram(PRUNE_TEXT, LMConfig(order=order)))
    lm = NgramLM(estimate_ngram(PRUNE_TEXT, LMConfig(order=order, min_counts=min_counts)))
    assert sum(map(len, lm.probs)) < sum(map(len, full.probs))
    assert lm.probs[0].keys() == full.probs[0].keys()
    vocab = [w for (w,) in lm.probs[0] if w != "<s>"]
    contexts = [()] + [g for table in lm.probs[:-1] for g in table if g[-1] != "</s>"]
    for context in contexts:
        total = sum(math.exp(lm.score(context, w)[0]) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-6), context


def test_pruning_keeps_frequent_ngrams_and_drops_rare_ones():
    lm = NgramLM(estimate_ngram(PRUNE_TEXT, LMConfig(order=3, min_counts=(2, 2))))
    full = NgramLM(estimate_ngram(PRUNE_TEXT, LMConfig(order=3)))
    assert ("the", "cat", "sat") in lm.probs[2]  # seen 4 times: kept with its own probability
    assert lm.probs[2][("the", "cat", "sat")][0] == full.probs[2][("the", "cat", "sat")][0]
    assert ("the", "mat", "sat") not in lm.probs[2] and ("mat", "sat") not in lm.probs[1]  # seen once


def test_pruning_at_count_one_changes_nothing():
    full = estimate_ngram(PRUNE_TEXT, LMConfig(order=3))
    same = estimate_ngram(PRUNE_TEXT, LMConfig(order=3, min_counts=(1, 1)))
    for table, other in zip(full, same, strict=True):
        assert table.keys() == other.keys()
        for g, (logp, backoff) in table.items():
            assert other[g] == pytest.approx((logp, backoff), abs=1e-9)


def test_too_many_or_zero_min_counts_are_refused():
    with pytest.raises(ConfigError, match="min_counts"):
        estimate_ngram(TEXT, LMConfig(order=2, min_counts=(2, 2)))
    with pytest.raises(ConfigError, match="min_counts"):
        estimate_ngram(TEXT, LMConfig(order=3, min_counts=(0,)))


def test_arpa_round_trip_keeps_probabilities(tmp_path):
    cfg = LMConfig(order=3)
    tables = estimate_ngram(TEXT, cfg)
    path = build_arpa(TEXT, tmp_path / "lm.arpa", cfg)
    loaded = load_arpa(path)
    assert [set(t) for t in loaded.probs] == [set(t) for t in tables]
    for table, loaded_table in zip(tables, loaded.probs, strict=True):
        for ngram, (logp, backoff) in table.items():
            assert loaded_table[ngram] == pytest.approx((logp, backoff), abs=1e-6)


def test_text_file_and_token_units(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("ab ba\n\nab\n")
    pieces = lambda s: list(s.replace(" ", "\u2581"))  # noqa: E731 - a char tokenizer's pieces
    path = build_arpa(text, tmp_path / "tok.arpa", LMConfig(order=2, unit="token"), split=pieces)
    lm = load_arpa(path)
    assert lm.in_vocab("a") and lm.in_vocab("\u2581")
    assert lm.score(("a",), "b")[0] > lm.score(("a",), "a")[0]


def test_units_with_whitespace_are_refused():
    with pytest.raises(ConfigError, match="whitespace"):
        estimate_ngram(["ab ba"], LMConfig(unit="token"), split=list)


def test_token_units_need_a_splitter():
    with pytest.raises(ConfigError, match="token"):
        estimate_ngram(TEXT, LMConfig(unit="token"))


def test_kenlm_reads_our_arpa_identically(tmp_path):
    kenlm = pytest.importorskip("kenlm")
    path = write_arpa(estimate_ngram(TEXT, LMConfig(order=3)), tmp_path / "lm.arpa")
    ours, theirs = load_arpa(path), kenlm.Model(str(path))
    for sentence in ["the cat sat", "a dog ran away", "the mat"]:
        expected = theirs.score(sentence, bos=True, eos=True) * LN10
        assert ours.sentence_score(sentence.split()) == pytest.approx(expected, abs=1e-4)
