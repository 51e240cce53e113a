"""Per-request phrase boosting (contextual biasing) over token ids.

A bonus is added for every token that extends a phrase prefix, so a beam can reach a rare name
before the LM or the acoustics would have kept it. A partial match that is abandoned gets its
bonus refunded (subtracted), so boosting never rewards merely *starting* a phrase; a completed
phrase keeps it. Matching is on token ids, so it works for words the LM has never seen.
On a mismatch the match restarts at the root with the current token (no Aho-Corasick failure
links): phrases that overlap themselves mid-way ("a a b" for "a b") are still found from the restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

BoostState = tuple[int, float]  # (trie node, bonus accumulated since the last completed phrase)
ROOT = 0


@dataclass
class _Node:
    children: dict[int, int]
    bonus: float  # per-token bonus for entering this node (max over phrases through it)
    is_end: bool


class PhraseBooster:
    """Token trie of boosted phrases ``[(token_ids, bonus_per_token), ...]``."""

    def __init__(self, phrases: Sequence[tuple[Sequence[int], float]]):
        self._nodes = [_Node({}, 0.0, False)]
        for tokens, bonus in phrases:
            if not tokens:
                continue
            node = ROOT
            for token in tokens:
                child = self._nodes[node].children.get(token)
                if child is None:
                    child = len(self._nodes)
                    self._nodes.append(_Node({}, bonus, False))
                    self._nodes[node].children[token] = child
                self._nodes[child].bonus = max(self._nodes[child].bonus, bonus)
                node = child
            self._nodes[node].is_end = True

    def __bool__(self) -> bool:
        return bool(self._nodes[ROOT].children)

    def initial_state(self) -> BoostState:
        return (ROOT, 0.0)

    def advance(self, state: BoostState, token: int) -> tuple[float, BoostState]:
        """Score change for appending ``token`` and the state after it."""
        node, pending = state
        child = self._nodes[node].children.get(token)
        if child is not None:
            return self._nodes[child].bonus, self._enter(child, pending)
        refund = -pending
        child = self._nodes[ROOT].children.get(token)
        if child is None:
            return refund, (ROOT, 0.0)
        return refund + self._nodes[child].bonus, self._enter(child, 0.0)

    def finish(self, state: BoostState) -> float:
        """Score change at the end of the utterance: refund a match left unfinished."""
        return -state[1]

    def deltas(self, state: BoostState, vocab_size: int) -> Tensor:
        """``advance``'s score change for every token at once, ``(V,)`` float32 (attention search)."""
        node, pending = state
        row = torch.full((vocab_size,), -pending)
        for token, child in self._nodes[ROOT].children.items():
            row[token] += self._nodes[child].bonus
        for token, child in self._nodes[node].children.items():
            row[token] = self._nodes[child].bonus
        return row

    def _enter(self, child: int, pending: float) -> BoostState:
        node = self._nodes[child]
        if not node.is_end:
            return (child, pending + node.bonus)
        return (child, 0.0) if node.children else (ROOT, 0.0)  # completed: the bonus is kept
