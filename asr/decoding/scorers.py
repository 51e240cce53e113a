"""What a label-synchronous search combines: the ``Scorer`` protocol and the scorers we own.

A search holds ``{name: scorer}`` and ``{name: weight}`` and adds ``weight * score``; it never
knows which scorers exist. The attention decoder (``asr.models``) satisfies :class:`Scorer`
structurally, with no import either way. Convention shared by every scorer: the state passed to
``score`` has consumed ``prefixes[:, :-1]``; ``score`` consumes ``prefixes[:, -1]`` (a prefix of
length 1 is just ``<sos>``) and returns scores for the *next* token plus the advanced state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from asr.decoding.boosting import BoostState, PhraseBooster
from asr.decoding.ngram import LMState, NgramLM
from asr.errors import ConfigError

WORD_START = "\u2581"  # sentencepiece's "▁": a piece starting with it begins a word


@runtime_checkable
class Scorer(Protocol):
    """Scores every vocabulary entry: ``score`` returns ``(K, V)`` for prefixes ``(K, U)``."""

    def init_state(self, enc: Tensor, enc_lens: Tensor) -> Any: ...

    def score(self, prefixes: Tensor, state: Any) -> tuple[Tensor, Any]: ...

    def select(self, state: Any, beam_ids: Tensor) -> Any: ...


@runtime_checkable
class PartialScorer(Protocol):
    """Scores only given candidates ``(K, C)``, for scorers too costly to run over all of V."""

    def init_state(self, enc: Tensor, enc_lens: Tensor) -> Any: ...

    def score_partial(self, prefixes: Tensor, candidates: Tensor, state: Any) -> tuple[Tensor, Any]: ...

    def select(self, state: Any, beam_ids: Tensor) -> Any: ...


def as_scorer(obj: object, name: str) -> Scorer | PartialScorer:
    """Accept any object with the scorer surface; ``ConfigError`` naming what is missing otherwise."""
    if isinstance(obj, (Scorer, PartialScorer)):
        return obj
    wanted = ("init_state", "score or score_partial", "select")
    raise ConfigError(f"scorer {name!r} ({type(obj).__name__}) must provide {', '.join(wanted)}")


class FunctionScorer:
    """Adapter for a stateless function ``prefixes (K, U) -> (K, V)`` (e.g. an uncached LM).

    It recomputes from the whole prefix at every step, so it suits short outputs and tests.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor]):
        self._fn = fn

    def init_state(self, enc: Tensor, enc_lens: Tensor) -> None:
        return None

    def score(self, prefixes: Tensor, state: None) -> tuple[Tensor, None]:
        return self._fn(prefixes), None

    def select(self, state: None, beam_ids: Tensor) -> None:
        return None


class LengthBonus:
    """+1 per emitted unit (all tokens but eos, or only word-starting pieces for word LMs).

    Its weight is ``SearchConfig.length_bonus``; it counters the short-output bias of LMs and
    of summed log-probs.
    """

    def __init__(self, vocab_size: int, eos_id: int, units: Tensor | None = None):
        row = torch.ones(vocab_size) if units is None else units.float()
        row[eos_id] = 0.0
        self._row = row  # (V,)

    def init_state(self, enc: Tensor, enc_lens: Tensor) -> None:
        return None

    def score(self, prefixes: Tensor, state: None) -> tuple[Tensor, None]:
        return self._row.expand(prefixes.size(0), -1), None

    def select(self, state: None, beam_ids: Tensor) -> None:
        return None


FusionState = tuple[LMState, str]  # (LM context, letters of the word not yet scored)


class NgramFusion:
    """Maps token ids to n-gram units: whole words (scored when the word completes) or pieces.

    Word units come from ``pieces``: a piece starting with "▁" begins a new word and so completes
    the previous one; the lone piece "▁" only separates. Shared by the CTC prefix beam and
    :class:`NgramScorer`, so both fuse the LM identically.
    """

    def __init__(self, lm: NgramLM, pieces: Sequence[str], unit: Literal["word", "token"]):
        self.lm, self.pieces, self.unit = lm, list(pieces), unit

    def initial_state(self) -> FusionState:
        return (self.lm.begin_state(), "")

    def advance(self, state: FusionState, token: int) -> tuple[float, FusionState]:
        """LM log-prob earned by appending ``token`` and the state after it."""
        lm_state, pending = state
        piece = self.pieces[token]
        if self.unit == "token":
            logp, lm_state = self.lm.score(lm_state, piece)
            return logp, (lm_state, "")
        if not piece.startswith(WORD_START):
            return 0.0, (lm_state, pending + piece)
        logp = 0.0
        if pending:
            logp, lm_state = self.lm.score(lm_state, pending)
        return logp, (lm_state, piece[len(WORD_START) :])

    def completes_unit(self, state: FusionState, token: int) -> bool:
        """Whether appending ``token`` adds a unit, for the per-unit length bonus."""
        if self.unit == "token":
            return True
        return bool(state[1]) and self.pieces[token].startswith(WORD_START)

    def finish(self, state: FusionState) -> tuple[float, int]:
        """Log-prob of the last (pending) word plus ``</s>``, and the units it completes."""
        lm_state, pending = state
        logp, units = 0.0, 0
        if pending:
            logp, lm_state = self.lm.score(lm_state, pending)
            units = 1
        return logp + self.lm.final_score(lm_state), units

    def word_start_mask(self) -> Tensor:
        """``(V,)`` bool: tokens that would complete a pending word."""
        return torch.tensor([p.startswith(WORD_START) for p in self.pieces])


class NgramScorer:
    """n-gram LM fusion for label-synchronous search, returning natural-log scores ``(K, V)``."""

    def __init__(self, fusion: NgramFusion, eos_id: int):
        self.fusion, self.eos_id = fusion, eos_id
        self._vocab_size = len(fusion.pieces)
        self._word_start = fusion.word_start_mask()
        self._token_rows: dict[LMState, Tensor] = {}

    def init_state(self, enc: Tensor, enc_lens: Tensor) -> list[FusionState]:
        return [self.fusion.initial_state()]

    def score(self, prefixes: Tensor, state: list[FusionState]) -> tuple[Tensor, list[FusionState]]:
        if prefixes.size(1) > 1:
            last = prefixes[:, -1].tolist()
            state = [self.fusion.advance(s, tok)[1] for s, tok in zip(state, last, strict=True)]
        return torch.stack([self._row(s) for s in state]), state

    def select(self, state: list[FusionState], beam_ids: Tensor) -> list[FusionState]:
        return [state[i] for i in beam_ids.tolist()]

    def _row(self, state: FusionState) -> Tensor:
        lm_state, pending = state
        if self.fusion.unit == "token":
            row = self._token_rows.get(lm_state)
            if row is None:
                lm = self.fusion.lm
                row = torch.tensor([lm.score(lm_state, p)[0] for p in self.fusion.pieces])
                self._token_rows[lm_state] = row
            row = row.clone()
        else:
            word_logp = self.fusion.lm.score(lm_state, pending)[0] if pending else 0.0
            row = self._word_start.float() * word_logp
        row[self.eos_id] = self.fusion.finish(state)[0]
        return row


class BoostScorer:
    """Phrase boosting for label-synchronous search (bonuses and refunds, see ``boosting``)."""

    def __init__(self, booster: PhraseBooster, vocab_size: int, eos_id: int):
        self.booster, self.vocab_size, self.eos_id = booster, vocab_size, eos_id

    def init_state(self, enc: Tensor, enc_lens: Tensor) -> list[BoostState]:
        return [self.booster.initial_state()]

    def score(self, prefixes: Tensor, state: list[BoostState]) -> tuple[Tensor, list[BoostState]]:
        if prefixes.size(1) > 1:
            state = [self.booster.advance(s, tok)[1] for s, tok in zip(state, prefixes[:, -1].tolist(), strict=True)]
        rows = []
        for s in state:
            row = self.booster.deltas(s, self.vocab_size)
            row[self.eos_id] = self.booster.finish(s)
            rows.append(row)
        return torch.stack(rows), state

    def select(self, state: list[BoostState], beam_ids: Tensor) -> list[BoostState]:
        return [state[i] for i in beam_ids.tolist()]
