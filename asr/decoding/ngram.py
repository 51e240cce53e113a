"""ARPA back-off n-gram language model: load once, score words (or pieces) during search.

The model is a plain-Python table, so CI needs no compiled dependency. A state is the tuple of
context words, kept at the longest suffix the model knows (as KenLM does), so hypotheses whose
histories differ only in forgotten words share a state and score cache.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

from asr.errors import CheckpointError

LN10 = math.log(10.0)  # ARPA stores log10; search adds natural logs
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LMState = tuple[str, ...]

_COUNT_LINE = re.compile(r"^ngram\s+(\d+)\s*=\s*(\d+)$")
_SECTION = re.compile(r"^\\(\d+)-grams:$")


class NgramLM:
    """Back-off n-gram model with natural-log scores.

    ``probs[n-1]`` maps an n-gram (tuple of words) to ``(log10 p, log10 backoff)``. Words missing
    from the vocabulary score as ``<unk>`` when the model has it, else ``oov_log10`` (KenLM uses
    -100; -10 keeps boosted or novel words reachable during fusion) and reset the context.
    """

    def __init__(self, probs: list[dict[tuple[str, ...], tuple[float, float]]], *, oov_log10: float = -10.0):
        if not probs or not probs[0]:
            raise CheckpointError("an n-gram model needs at least one unigram")
        self.probs = probs
        self.order = len(probs)
        unk = probs[0].get((UNK,))
        self.oov_log10 = unk[0] if unk is not None else oov_log10
        self._cache: dict[tuple[LMState, str], tuple[float, LMState]] = {}

    def begin_state(self) -> LMState:
        """Context at the start of a sentence (after ``<s>``)."""
        return (BOS,) if self.order > 1 else ()

    def in_vocab(self, word: str) -> bool:
        return (word,) in self.probs[0]

    def score(self, state: LMState, word: str) -> tuple[float, LMState]:
        """Natural-log ``p(word | state)`` with back-off, and the state after ``word``."""
        key = (state, word)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._score(state, word)
            self._cache[key] = cached
        return cached

    def final_score(self, state: LMState) -> float:
        """Natural-log probability of ending the sentence here (``</s>``)."""
        return self.score(state, EOS)[0]

    def sentence_score(self, words: list[str]) -> float:
        """Natural-log probability of a whole sentence, ``</s>`` included."""
        state, total = self.begin_state(), 0.0
        for word in words:
            logp, state = self.score(state, word)
            total += logp
        return total + self.final_score(state)

    def _score(self, state: LMState, word: str) -> tuple[float, LMState]:
        if not self.in_vocab(word):
            return self.oov_log10 * LN10, ()
        backoff = 0.0
        context = state
        while True:
            entry = self.probs[len(context)].get((*context, word))
            if entry is not None:
                return (backoff + entry[0]) * LN10, self._next_state((*state, word))
            if not context:  # unreachable: every vocabulary word has a unigram
                return self.oov_log10 * LN10, ()
            ctx_entry = self.probs[len(context) - 1].get(context)
            backoff += ctx_entry[1] if ctx_entry is not None else 0.0
            context = context[1:]

    def _next_state(self, history: tuple[str, ...]) -> LMState:
        """Longest suffix of ``history`` (at most order-1 words) that is an n-gram of the model."""
        history = history[max(0, len(history) - (self.order - 1)) :]
        while history and history not in self.probs[len(history) - 1]:
            history = history[1:]
        return history


def load_arpa(path: str | Path, *, oov_log10: float = -10.0) -> NgramLM:
    """Read an ARPA file; ``CheckpointError`` naming file and line when it is malformed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"n-gram LM {path} does not exist; build one with `asr lm` or fix search.lm_path")
    with path.open(encoding="utf-8") as lines:
        return NgramLM(_parse(iter(enumerate(lines, start=1)), path), oov_log10=oov_log10)


def parse_arpa(text: str, name: str = "<arpa>", *, oov_log10: float = -10.0) -> NgramLM:
    """An ARPA model held in memory (the n-gram stored inside a checkpoint); errors name ``name`` and line."""
    return NgramLM(_parse(iter(enumerate(text.splitlines(), start=1)), Path(name)), oov_log10=oov_log10)


def _parse(lines: Iterator[tuple[int, str]], path: Path) -> list[dict[tuple[str, ...], tuple[float, float]]]:
    def fail(lineno: int, why: str) -> CheckpointError:
        return CheckpointError(f"{path}:{lineno}: malformed ARPA file: {why}")

    lineno, line = _next_content(lines, path)
    if line != "\\data\\":
        raise fail(lineno, f"expected the \\data\\ header, found {line[:40]!r}")
    counts: dict[int, int] = {}
    lineno, line = _next_content(lines, path)
    while (match := _COUNT_LINE.match(line)) is not None:
        counts[int(match.group(1))] = int(match.group(2))
        lineno, line = _next_content(lines, path)
    if not counts or sorted(counts) != list(range(1, len(counts) + 1)):
        raise fail(lineno, f"the \\data\\ section must list 'ngram N=count' for N = 1..order, got {counts}")
    probs: list[dict[tuple[str, ...], tuple[float, float]]] = [{} for _ in counts]
    for order in range(1, len(counts) + 1):
        if (match := _SECTION.match(line)) is None or int(match.group(1)) != order:
            raise fail(lineno, f"expected \\{order}-grams:, found {line[:40]!r}")
        table = probs[order - 1]
        lineno, line = _next_content(lines, path)
        while not line.startswith("\\"):
            fields = line.split()
            if len(fields) not in (order + 1, order + 2):
                raise fail(lineno, f"a {order}-gram line needs log10 prob, {order} words and an optional backoff")
            try:
                logp = float(fields[0])
                backoff = float(fields[order + 1]) if len(fields) == order + 2 else 0.0
            except ValueError as exc:
                raise fail(lineno, f"not a number ({exc})") from exc
            table[tuple(fields[1 : order + 1])] = (logp, backoff)
            lineno, line = _next_content(lines, path)
        if len(table) != counts[order]:
            raise fail(lineno, f"header promises {counts[order]} {order}-grams, found {len(table)}")
    if line != "\\end\\":
        raise fail(lineno, f"expected \\end\\, found {line[:40]!r}")
    return probs


def _next_content(lines: Iterator[tuple[int, str]], path: Path) -> tuple[int, str]:
    for lineno, raw in lines:
        line = raw.strip()
        if line:
            return lineno, line
    raise CheckpointError(f"{path}: malformed ARPA file: ends before \\end\\ (truncated?)")
