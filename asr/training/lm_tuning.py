"""Choose the n-gram fusion weight and length bonus of a model's default search on a dev set.

Fusion weights do not transfer between models or domains, so ``asr pack --tune DEV`` searches
a small grid on the user's own dev manifest and keeps the best point; the no-LM search is
scored too, so an LM that does not help is reported (and kept off) rather than shipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from asr.config import SearchConfig
from asr.data.manifest import ManifestEntry
from asr.errors import ConfigError
from asr.inference import Recognizer
from asr.training.evaluate import evaluate

LM_WEIGHTS = (0.1, 0.2, 0.3, 0.5, 0.8, 1.2)
LENGTH_BONUSES = (0.0, 0.5, 1.0)  # a word LM favours short outputs; the bonus pays per word to counter it


@dataclass(frozen=True)
class TuningPoint:
    lm_weight: float
    length_bonus: float
    wer: float
    cer: float


def tune_lm_fusion(
    recognizer: Recognizer,
    dev: Sequence[ManifestEntry],
    base: SearchConfig,
    *,
    weights: Sequence[float] = LM_WEIGHTS,
    bonuses: Sequence[float] = LENGTH_BONUSES,
) -> tuple[SearchConfig, list[TuningPoint]]:
    """The dev-best of ``base`` without LM and with each (weight, bonus); every point scored.

    ``base.lm_path`` names the LM (a file or ``@model``). Ties keep the earlier point, so the
    smaller weight and no LM win over an equal score.
    """
    if not base.lm_path:
        raise ConfigError("LM tuning needs an n-gram: give --lm FILE (or a model that stores one)")
    if base.method not in ("ctc_prefix_beam", "attention_beam", "joint"):
        raise ConfigError(f"n-gram fusion runs inside beam search; {base.method!r} cannot use it (try ctc_prefix_beam)")
    if not dev:
        raise ConfigError("the LM tuning dev set is empty")
    grid = [(0.0, 0.0), *((w, b) for w in weights for b in bonuses)]
    points: list[TuningPoint] = []
    best: tuple[float, SearchConfig] | None = None
    for weight, bonus in grid:
        cfg = dataclasses.replace(base, lm_weight=weight, length_bonus=bonus)
        report = evaluate(recognizer, dev, cfg)
        points.append(TuningPoint(weight, bonus, report.wer, report.cer))
        if best is None or report.wer < best[0] - 1e-12:
            best = (report.wer, cfg)
    assert best is not None
    return best[1], points
