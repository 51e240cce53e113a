"""Text normalisation and the char / BPE tokenizers (ids, pieces, round trips, serialisation)."""

from __future__ import annotations

import pickle

import pytest

from asr.config import TokenizerConfig
from asr.errors import CheckpointError, ConfigError
from asr.tokenizer import (
    BLANK_ID,
    EOS_ID,
    UNK_ID,
    WORD_BOUNDARY,
    CharTokenizer,
    SentencePieceTokenizer,
    build_tokenizer,
    normalize_text,
    tokenizer_from_dict,
)

TEXTS = [
    "THE TWO STRAY KITTENS GRADUALLY MAKE THEMSELVES AT HOME",
    "IN THE VALLEY OF THE SHADOW OF DEATH HE IS WITH US",
    "SHE DOESN'T PICK THEM UP BUT JUST HAVING THEM IN THE ROOM SURE DOESN'T GIVE HER ASTHMA",
    "Printing, in the only sense with which we are at present concerned, differs from most arts.",
    'the earliest book printed with movable types, the Gutenberg, or "forty-two line Bible" of about 1455,',
    "zero one two three four five six seven eight nine",
    "yes no up down left right on off stop go",
] * 3


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("In 1465 Sweynheim and Pannartz began", "in fourteen sixty five sweynheim and pannartz began"),
        ("1984", "nineteen eighty four"),
        ("42", "forty two"),
        ("the 3rd, 21st and 100th time", "the third twenty first and one hundredth time"),
        ('"forty-two line Bible" of about 1455,', "forty two line bible of about fourteen fifty five"),
        ("Café naïve DÉJÀ-VU", "cafe naive deja vu"),
        ("DON'T 'quote' me — it’s fine!", "don't quote me it's fine"),
        ("1,000 people paid $5", "one thousand people paid five dollars"),
        ("pi is 3.14 and 50% of 2000", "pi is three point one four and fifty percent of two thousand"),
        ("  spaces\tand\nnewlines  ", "spaces and newlines"),
        ("1900 1905 2024 007", "nineteen hundred nineteen oh five two thousand twenty four zero zero seven"),
        ("?!...", ""),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


# Real transcript lines of each shared corpus (../shared/data/*/manifest.jsonl) and the words that were said.
CORPUS_LINES = {
    "mini_librispeech (upper case, apostrophes)": (
        "BROKE IN CRAGGS I WAS BRIGADED WITH ARENTSCHILD'S HANOVERIANS IN SPAIN",
        "broke in craggs i was brigaded with arentschild's hanoverians in spain",
    ),
    "speechocean762 (upper case)": ("SHE IS A GIRL WITH A LOT OF TALENT", "she is a girl with a lot of talent"),
    "an4 (spelled letters stay one word each)": (
        "RUBOUT T G J W B SEVENTY NINE FIFTY NINE",
        "rubout t g j w b seventy nine fifty nine",
    ),
    "kathleen_arctic (sentence case, punctuation)": (
        "Lord, but I'm glad to see you again, Phil.",
        "lord but i'm glad to see you again phil",
    ),
    "ljspeech_more raw (digits, title)": (
        "The numbers soon increased, however, and by 1811 had again risen to 629; and Mr. Neild was told that",
        "the numbers soon increased however and by eighteen eleven had again risen to six hundred twenty nine "
        "and mister neild was told that",
    ),
    "ljspeech_more raw (pounds)": (
        "and the aggregate amount of debts sued for was £81,791.",
        "and the aggregate amount of debts sued for was eighty one thousand seven hundred ninety one pounds",
    ),
    "ljspeech_prompts_second_reader": (
        "Mr. Bennet refers to a gentleman confined for want of bail, who occupied a room with five others",
        "mister bennet refers to a gentleman confined for want of bail who occupied a room with five others",
    ),
}


@pytest.mark.parametrize("corpus", sorted(CORPUS_LINES))
def test_normalize_text_on_real_lines_of_each_corpus(corpus: str) -> None:
    raw, said = CORPUS_LINES[corpus]
    assert normalize_text(raw) == said


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [  # ljspeech_more: its `text_raw` and normalized `text` columns of the same clip
        (
            "Quite half of the foregoing writs and arrests applied to sums under £30.",
            "Quite half of the foregoing writs and arrests applied to sums under thirty pounds.",
        ),
        (
            "and a heavy fee at the rate of £8 per £100, with £4 for every additional hundred.",
            "and a heavy fee at the rate of eight pounds per one hundred pounds, with four pounds for every additional "
            "hundred.",
        ),
        (
            "Messrs. Miller and Richard, etc., paid $2.01",
            "messieurs miller and richard et cetera paid two dollars one cent",
        ),
        ("Mrs. Smith & Dr Jones: £1.01", "missus smith and doctor jones one pound one penny"),
    ],
)
def test_raw_and_spelled_out_transcripts_normalise_alike(raw: str, normalized: str) -> None:
    assert normalize_text(raw) == normalize_text(normalized)


def test_normalize_text_can_keep_digits() -> None:
    assert normalize_text("Room 101, floor 3!", numbers_to_words=False) == "room 101 floor 3"


def test_ljspeech_raw_and_normalized_transcripts_agree() -> None:
    raw = 'the Gutenberg, or "forty-two line Bible" of about 1455,'
    spelled = 'the Gutenberg, or "forty-two line Bible" of about fourteen fifty-five,'
    assert normalize_text(raw) == normalize_text(spelled)


def test_char_tokenizer_special_ids_and_space_piece() -> None:
    tok = CharTokenizer.from_texts(TEXTS)
    assert tok.pieces[:4] == ["<blank>", "<eos>", "<unk>", WORD_BOUNDARY]
    assert (BLANK_ID, EOS_ID, UNK_ID) == (0, 1, 2)
    assert len(tok.pieces) == tok.vocab_size
    ids = tok.encode("He is")
    assert [tok.pieces[i] for i in ids] == ["h", "e", WORD_BOUNDARY, "i", "s"]


def test_char_tokenizer_round_trips_normalised_text() -> None:
    tok = CharTokenizer.from_texts(TEXTS)
    text = "She doesn't give the kittens 42 books!"
    assert tok.decode(tok.encode(text)) == normalize_text(text)


def test_unknown_characters_encode_to_unk_and_decode_drops_specials() -> None:
    tok = CharTokenizer.from_texts(["abc abc"])
    ids = tok.encode("abz")
    assert ids[-1] == UNK_ID
    assert tok.decode([BLANK_ID, *ids, EOS_ID]) == "ab"


def test_char_tokenizer_is_deterministic_and_serialisable() -> None:
    tok = CharTokenizer.from_texts(TEXTS)
    again = CharTokenizer.from_texts(list(reversed(TEXTS)))
    assert tok.pieces == again.pieces
    restored = tokenizer_from_dict(tok.to_dict())
    assert restored.pieces == tok.pieces
    assert restored.encode("forty two") == tok.encode("forty two")


def test_char_tokenizer_needs_some_text() -> None:
    with pytest.raises(ConfigError, match="empty"):
        CharTokenizer.from_texts(["", "?!"])


@pytest.fixture(scope="module")
def bpe() -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(TEXTS, vocab_size=60)


def test_bpe_special_ids_match_the_contract(bpe: SentencePieceTokenizer) -> None:
    assert bpe.pieces[:3] == ["<blank>", "<eos>", "<unk>"]
    assert bpe.vocab_size == len(bpe.pieces) <= 60


def test_bpe_pieces_mark_word_starts(bpe: SentencePieceTokenizer) -> None:
    pieces = [bpe.pieces[i] for i in bpe.encode("the kittens")]
    word_starts = [p for p in pieces if p.startswith(WORD_BOUNDARY)]
    assert len(word_starts) == 2
    assert pieces[0].startswith(WORD_BOUNDARY)


def test_bpe_round_trip_and_unknown_characters(bpe: SentencePieceTokenizer) -> None:
    text = "The two kittens, forty-two!"
    assert bpe.decode(bpe.encode(text)) == normalize_text(text)
    assert UNK_ID in bpe.encode("quiz")  # q and z never occur in TEXTS
    assert all(i > UNK_ID for i in bpe.encode("the home"))


def test_bpe_serialises_to_plain_data_and_pickles(bpe: SentencePieceTokenizer) -> None:
    data = bpe.to_dict()
    assert isinstance(data["model"], bytes)
    for restored in (tokenizer_from_dict(data), pickle.loads(pickle.dumps(bpe))):
        assert restored.pieces == bpe.pieces
        assert restored.encode("the valley of death") == bpe.encode("the valley of death")


def test_bpe_training_is_deterministic(bpe: SentencePieceTokenizer) -> None:
    assert SentencePieceTokenizer.train(TEXTS, vocab_size=60).pieces == bpe.pieces


def test_build_tokenizer_dispatches_on_kind() -> None:
    assert isinstance(build_tokenizer(TokenizerConfig(kind="char"), TEXTS), CharTokenizer)
    bpe = build_tokenizer(TokenizerConfig(kind="bpe", vocab_size=50), TEXTS)
    assert isinstance(bpe, SentencePieceTokenizer)


def test_corrupt_tokenizer_data_raises_checkpoint_error() -> None:
    with pytest.raises(CheckpointError, match="unknown tokenizer kind"):
        tokenizer_from_dict({"kind": "wordpiece"})
    with pytest.raises(CheckpointError, match="corrupt"):
        tokenizer_from_dict({"kind": "bpe", "model": b"garbage"})
    with pytest.raises(CheckpointError, match="malformed"):
        tokenizer_from_dict({"kind": "char", "pieces": ["a", "b"]})
