"""The one result type shared by every search (greedy, prefix beam, attention, joint, rescoring)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Hypothesis:
    """One transcript candidate as token ids, with what timestamps and confidences need.

    ``token_frames[i]`` is the encoder frame (T') where token ``i`` peaks, and
    ``token_log_probs[i]`` its posterior log-probability there (CTC) or its share of the
    beam's probability mass (attention), so ``exp`` of it is a per-token confidence.
    ``scores`` breaks ``score`` down by source (``"ctc"``, ``"lm"``, ``"decoder"``, ...), which
    rescoring needs to recombine them with new weights.
    """

    tokens: list[int]
    score: float
    token_log_probs: list[float]
    token_frames: list[int]
    confidence: float = 1.0  # [0, 1]; see sequence_confidence
    scores: dict[str, float] = field(default_factory=dict)
    num_frames: int = 0  # encoder frames of the utterance: the upper bound for word end times


@dataclass
class NBest:
    """Hypotheses best first; ``best`` of an empty list is the empty transcript."""

    hypotheses: list[Hypothesis]

    @property
    def best(self) -> Hypothesis:
        if not self.hypotheses:
            return Hypothesis(tokens=[], score=0.0, token_log_probs=[], token_frames=[])
        return self.hypotheses[0]


@dataclass(frozen=True)
class WordTiming:
    word: str
    start_s: float
    end_s: float
    confidence: float  # [0, 1]


def sequence_confidence(token_log_probs: Sequence[float]) -> float:
    """Geometric mean of the token posteriors, in [0, 1].

    The geometric mean keeps long and short transcripts comparable; an empty transcript claims
    nothing and so gets 1.0 (the blank posterior already decided it).
    """
    if not token_log_probs:
        return 1.0
    mean = sum(token_log_probs) / len(token_log_probs)
    return min(1.0, max(0.0, math.exp(min(mean, 0.0))))
