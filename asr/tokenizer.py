"""Text normalisation and the two tokenizers (characters, sentencepiece BPE).

:func:`normalize_text` is the single definition of "the words that were said": training targets
are encoded from it and WER is scored on it, so a transcript that differs from the reference only
in casing, punctuation or "42" versus "forty two" is not counted as an error.

Id conventions (shared with the models and the search): ``BLANK_ID`` = 0 (CTC blank), ``EOS_ID``
= 1 (also <sos> for the attention decoder), ``UNK_ID`` = 2, then real tokens. A piece that begins
a word starts with "▁" (U+2581), as in sentencepiece; the char tokenizer has "▁" as a piece of its
own for the space, so for both "a new word starts at a piece beginning with ▁".
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import sentencepiece as spm

from asr.config import TokenizerConfig
from asr.errors import CheckpointError, ConfigError

BLANK_ID = 0
EOS_ID = 1
UNK_ID = 2
SPECIAL_PIECES = ("<blank>", "<eos>", "<unk>")
WORD_BOUNDARY = "\u2581"  # "▁", sentencepiece's word-start marker

# fmt: off
_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
# fmt: on
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip
_MAX_CARDINAL = 10**15  # beyond this, digits are read one by one (account or phone numbers)

_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_CURRENCY = re.compile(r"([$£])\s?(\d+)(?:\.(\d\d))?\b")
_CURRENCY_WORDS = {"$": ("dollar", "cent"), "£": ("pound", "penny")}
# Titles and Latin abbreviations as LibriSpeech's transcribers spell them out ("MISTER", "MISSUS");
# LJSpeech and ARCTIC keep them abbreviated. "st." (saint or street) and "no." are ambiguous: left alone.
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "messrs": "messieurs", "etc": "et cetera"}
_ABBREVIATION = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\b\.?")
_PERCENT = re.compile(r"(\d)\s?%")
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b")
_DECIMAL = re.compile(r"(\d+)\.(\d+)")
_INTEGER = re.compile(r"\d+")
_APOSTROPHES = re.compile(r"[\u2018\u2019\u02bc\u02b9`´]")
_DASHES = re.compile(r"[-\u2010-\u2015\u2212_/]")
_NOT_WORD_CHAR = re.compile(r"[^a-z0-9' ]")
_STRAY_APOSTROPHE = re.compile(r"(?<![a-z0-9])'|'(?![a-z0-9])")  # keep only in-word: "don't", not "'quoted'"


def normalize_text(text: str, *, numbers_to_words: bool = True) -> str:
    """Lower-case words of letters, digits and in-word apostrophes separated by single spaces.

    Accents are stripped (NFKD, "café" → "cafe"); hyphens, dashes and slashes separate words
    ("forty-two" → "forty two"); other punctuation is dropped. With ``numbers_to_words`` digits
    are spelled as the corpora's readers say them ("1984" → "nineteen eighty four", "3rd" →
    "third"), so a model never has to output digits. Titles are spelled out ("Mr." → "mister")
    and "&" is "and", as LibriSpeech writes them. Upper-case corpora (LibriSpeech,
    speechocean762, AN4) and AN4's spelled letters ("P L E A S A N T", one word per letter, as
    spoken) need nothing more: each corpus's lines are checked in tests/test_tokenizer.py.
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = _APOSTROPHES.sub("'", text.lower()).replace("&", " and ")
    text = _ABBREVIATION.sub(lambda m: _ABBREVIATIONS[m.group(1)], text)
    if numbers_to_words:
        text = expand_numbers(text)
    text = _DASHES.sub(" ", text)
    text = _NOT_WORD_CHAR.sub(" ", text)
    text = _STRAY_APOSTROPHE.sub(" ", text)
    return " ".join(text.split())


def expand_numbers(text: str) -> str:
    """Spell out digits in lower-cased text the way the corpora's readers say them.

    "1,000" → "one thousand", "$5" → "five dollars", "3.5" → "three point five", "21st" →
    "twenty first", "1455" → "fourteen fifty five" (1100–1999 are read as years, the common case
    in LibriSpeech and LJSpeech books), "007" → "zero zero seven". Cardinals have no "and".
    """
    text = _THOUSANDS_COMMA.sub("", text)
    text = _CURRENCY.sub(_say_currency, text)
    text = _PERCENT.sub(r"\1 percent", text)
    text = _ORDINAL.sub(lambda m: _ordinal(int(m.group(1))), text)
    text = _DECIMAL.sub(lambda m: f"{_say_integer(m.group(1))} point {_say_digits(m.group(2))}", text)
    return _INTEGER.sub(lambda m: f" {_say_integer(m.group(0))} ", text)


def _say_currency(match: re.Match[str]) -> str:
    unit, sub_unit = _CURRENCY_WORDS[match.group(1)]
    whole, part = int(match.group(2)), int(match.group(3) or 0)
    words = f"{_cardinal(whole)} {unit}{'' if whole == 1 else 's'}"
    if part:
        words += f" {_cardinal(part)} {sub_unit if part == 1 else _plural(sub_unit)}"
    return words


def _plural(noun: str) -> str:
    return "pence" if noun == "penny" else noun + "s"


def _say_integer(digits: str) -> str:
    if (len(digits) > 1 and digits.startswith("0")) or int(digits) >= _MAX_CARDINAL:
        return _say_digits(digits)
    n = int(digits)
    if 1100 <= n <= 1999:
        century, year = divmod(n, 100)
        if year == 0:
            return f"{_cardinal(century)} hundred"
        return f"{_cardinal(century)} {'oh ' if year < 10 else ''}{_cardinal(year)}"
    return _cardinal(n)


def _say_digits(digits: str) -> str:
    return " ".join(_ONES[int(d)] for d in digits)


def _cardinal(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {_cardinal(rest)}" if rest else "")
    for scale, name in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return f"{_cardinal(high)} {name}" + (f" {_cardinal(rest)}" if rest else "")
    raise AssertionError(n)  # unreachable: every n >= 1000 has a scale


def _ordinal(n: int) -> str:
    words = _cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


class Tokenizer(Protocol):
    """What models, search and checkpoints need from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def pieces(self) -> list[str]: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


def _pieces_to_text(pieces: Sequence[str], ids: Sequence[int]) -> str:
    text = "".join(pieces[i] for i in ids if i > UNK_ID and i < len(pieces))
    return " ".join(text.replace(WORD_BOUNDARY, " ").split())


class CharTokenizer:
    """One token per character of the normalised text; the space is the piece "▁".

    The vocabulary is the set of characters seen in the training texts (sorted, so building it
    twice from the same texts gives the same ids); anything else encodes to ``UNK_ID``.
    """

    def __init__(self, chars: Iterable[str], *, numbers_to_words: bool = True) -> None:
        symbols = sorted(set(chars) - {" ", WORD_BOUNDARY})
        if any(len(c) != 1 for c in symbols):
            raise ConfigError(f"CharTokenizer symbols must be single characters, got {symbols!r}")
        self._pieces = [*SPECIAL_PIECES, WORD_BOUNDARY, *symbols]
        self._ids = {piece: i for i, piece in enumerate(self._pieces)}
        self._ids[" "] = self._ids[WORD_BOUNDARY]
        self.numbers_to_words = numbers_to_words

    @classmethod
    def from_texts(cls, texts: Iterable[str], *, numbers_to_words: bool = True) -> CharTokenizer:
        chars: set[str] = set()
        for text in texts:
            chars.update(normalize_text(text, numbers_to_words=numbers_to_words))
        if not chars - {" "}:
            raise ConfigError("cannot build a character vocabulary: the training texts are empty")
        return cls(chars, numbers_to_words=numbers_to_words)

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def pieces(self) -> list[str]:
        return list(self._pieces)

    def encode(self, text: str) -> list[int]:
        normalized = normalize_text(text, numbers_to_words=self.numbers_to_words)
        return [self._ids.get(c, UNK_ID) for c in normalized]

    def decode(self, ids: Sequence[int]) -> str:
        return _pieces_to_text(self._pieces, ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "char",
            "pieces": list(self._pieces),
            "numbers_to_words": self.numbers_to_words,
        }


class SentencePieceTokenizer:
    """Sentencepiece BPE trained in memory; the model travels as bytes inside the checkpoint.

    The special ids are reserved at training time (pad = <blank> = 0, eos = 1, unk = 2, no bos),
    so sentencepiece ids are our ids with no remapping.
    """

    def __init__(self, model: bytes, *, numbers_to_words: bool = True) -> None:
        self._model = bytes(model)
        self._processor = spm.SentencePieceProcessor()
        try:
            self._processor.LoadFromSerializedProto(self._model)
        except (RuntimeError, OSError) as exc:
            raise CheckpointError(f"the stored sentencepiece model is corrupt ({exc}); retrain the tokenizer") from exc
        self._pieces = [self._processor.IdToPiece(i) for i in range(self._processor.GetPieceSize())]
        if tuple(self._pieces[:3]) != SPECIAL_PIECES:
            raise CheckpointError(
                f"sentencepiece model has special pieces {self._pieces[:3]}, expected {list(SPECIAL_PIECES)}; "
                "build it with asr.tokenizer.SentencePieceTokenizer.train"
            )
        self.numbers_to_words = numbers_to_words

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *, numbers_to_words: bool = True) -> SentencePieceTokenizer:
        """BPE on the normalised texts; the vocabulary may come out smaller on a tiny corpus."""
        sentences = [s for s in (normalize_text(t, numbers_to_words=numbers_to_words) for t in texts) if s]
        if not sentences:
            raise ConfigError("cannot train a BPE tokenizer: the training texts are empty")
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=model,
                model_type="bpe",
                vocab_size=vocab_size,
                hard_vocab_limit=False,  # a small corpus yields fewer merges instead of an error
                character_coverage=1.0,
                pad_id=BLANK_ID,
                pad_piece=SPECIAL_PIECES[BLANK_ID],
                eos_id=EOS_ID,
                eos_piece=SPECIAL_PIECES[EOS_ID],
                unk_id=UNK_ID,
                unk_piece=SPECIAL_PIECES[UNK_ID],
                bos_id=-1,
                normalization_rule_name="identity",  # normalize_text already did it; keep one definition
                num_threads=1,  # deterministic merges
                minloglevel=2,
            )
        except RuntimeError as exc:
            raise ConfigError(f"sentencepiece training failed ({exc}); try a smaller tokenizer.vocab_size") from exc
        return cls(model.getvalue(), numbers_to_words=numbers_to_words)

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def pieces(self) -> list[str]:
        return list(self._pieces)

    def encode(self, text: str) -> list[int]:
        normalized = normalize_text(text, numbers_to_words=self.numbers_to_words)
        return list(self._processor.EncodeAsIds(normalized)) if normalized else []

    def decode(self, ids: Sequence[int]) -> str:
        return _pieces_to_text(self._pieces, ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "bpe", "model": self._model, "numbers_to_words": self.numbers_to_words}

    def __getstate__(self) -> dict[str, Any]:
        return self.to_dict()  # the C++ processor does not pickle; DataLoader workers need a copy

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model"], numbers_to_words=state["numbers_to_words"])  # type: ignore[misc]


def build_tokenizer(cfg: TokenizerConfig, texts: Iterable[str]) -> Tokenizer:
    """A tokenizer of ``cfg.kind`` fitted on the training ``texts``."""
    if cfg.kind == "char":
        return CharTokenizer.from_texts(texts, numbers_to_words=cfg.numbers_to_words)
    if cfg.kind == "bpe":
        return SentencePieceTokenizer.train(texts, cfg.vocab_size, numbers_to_words=cfg.numbers_to_words)
    raise ConfigError(f"tokenizer.kind: {cfg.kind!r} is not one of 'char', 'bpe'")


def tokenizer_from_dict(d: Mapping[str, Any]) -> Tokenizer:
    """Rebuild the tokenizer saved by ``to_dict`` (inside a checkpoint)."""
    kind = d.get("kind")
    numbers_to_words = bool(d.get("numbers_to_words", True))
    if kind == "char":
        pieces = d.get("pieces")
        if not isinstance(pieces, list) or tuple(pieces[:4]) != (*SPECIAL_PIECES, WORD_BOUNDARY):
            raise CheckpointError("stored char tokenizer has a malformed piece list; the checkpoint is corrupt")
        tokenizer = CharTokenizer(pieces[4:], numbers_to_words=numbers_to_words)
        if tokenizer.pieces != pieces:
            raise CheckpointError("stored char tokenizer pieces are not in canonical order; the checkpoint is corrupt")
        return tokenizer
    if kind == "bpe":
        model = d.get("model")
        if not isinstance(model, (bytes, bytearray)):
            raise CheckpointError("stored BPE tokenizer has no model bytes; the checkpoint is corrupt")
        return SentencePieceTokenizer(bytes(model), numbers_to_words=numbers_to_words)
    raise CheckpointError(f"unknown tokenizer kind {kind!r} in checkpoint; expected 'char' or 'bpe'")
