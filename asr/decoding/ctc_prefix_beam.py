"""CTC prefix beam search, as a stateful object so streaming and offline share one code path.

Each beam entry is a distinct label prefix with two log-probabilities: ending in blank (``pb``)
and ending in its last label (``pnb``); paths that collapse to the same prefix are merged by
log-add. Prefixes are nodes of a tree built on the fly (``parent`` + ``token``), so extending a
prefix and finding an existing one are O(1) and LM/boost states are computed once per prefix.
Per-frame work is pruned to the top ``beam_size`` tokens whose probability is at least
``prune_threshold``; frames where only blank survives (most of them) take a fast path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

from torch import Tensor

from asr.config import SearchConfig
from asr.decoding.boosting import BoostState, PhraseBooster
from asr.decoding.hypothesis import Hypothesis, NBest, sequence_confidence
from asr.decoding.ngram import NgramLM
from asr.decoding.scorers import FusionState, NgramFusion
from asr.errors import ConfigError

NEG_INF = float("-inf")
_Timing = Optional[tuple[int, float, "_Timing"]]  # (frame, log-prob, timing of the parent prefix)


def _log_add(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


class _Prefix:
    """A label prefix: the last token, its parent prefix, and the fused score it has earned."""

    __slots__ = ("token", "parent", "fusion_state", "boost_state", "lm_logp", "boost", "units", "fused")

    def __init__(self, token: int, parent: _Prefix | None):
        self.token, self.parent = token, parent
        self.fusion_state: FusionState | None = None
        self.boost_state: BoostState | None = None
        self.lm_logp = self.boost = 0.0
        self.units = 0  # tokens, or completed words for word LMs: what the length bonus counts
        self.fused = 0.0  # lm_weight * lm_logp + length_bonus * units + boost

    def tokens(self) -> list[int]:
        out, node = [], self
        while node.parent is not None:
            out.append(node.token)
            node = node.parent
        return out[::-1]


class CTCPrefixBeamSearch:
    """Streaming CTC prefix beam search: ``accept`` chunks, read ``partial``, end with ``finalize``.

    ``lm`` fuses an n-gram in word or token units (``cfg.lm_unit``; needs ``pieces``), weighted
    by ``cfg.lm_weight``, with ``cfg.length_bonus`` per unit. ``boost`` biases towards phrases.
    Accepting a whole utterance or the same frames in chunks gives identical results.
    """

    def __init__(
        self,
        cfg: SearchConfig,
        *,
        pieces: Sequence[str] | None = None,
        lm: NgramLM | None = None,
        boost: PhraseBooster | None = None,
    ):
        self.cfg = cfg
        self._fusion: NgramFusion | None = None
        if lm is not None and cfg.lm_weight != 0.0:
            if pieces is None:
                raise ConfigError("LM fusion needs the tokenizer pieces to map token ids to LM units")
            self._fusion = NgramFusion(lm, pieces, cfg.lm_unit)
        self._lm_weight = cfg.lm_weight if self._fusion is not None else 0.0
        self._boost = boost if boost else None
        self._log_threshold = math.log(cfg.prune_threshold) if cfg.prune_threshold > 0 else NEG_INF
        self.reset()

    def reset(self) -> None:
        """Forget everything accepted so far (start a new utterance)."""
        root = _Prefix(-1, None)
        root.fusion_state = self._fusion.initial_state() if self._fusion else None
        root.boost_state = self._boost.initial_state() if self._boost else None
        # prefix -> [log p(blank-ending), log p(label-ending), timing of the best contributing path]
        self._beam: dict[_Prefix, list] = {root: [0.0, NEG_INF, None]}
        self._num_frames = 0

    @property
    def num_frames(self) -> int:
        return self._num_frames

    def accept(self, log_probs: Tensor) -> None:
        """Advance over a chunk of CTC log-posteriors ``(T', V)``."""
        if log_probs.dim() != 2:
            raise ValueError(f"accept takes (T', V) log-probs, got shape {tuple(log_probs.shape)}")
        if log_probs.size(0) == 0:
            return
        k = min(self.cfg.beam_size, log_probs.size(1))
        values, ids = log_probs.detach().float().topk(k, dim=-1)  # (T', k), one call per chunk
        blank = self.cfg.blank_id
        for frame_values, frame_ids in zip(values.tolist(), ids.tolist(), strict=True):
            keep = [(c, lp) for c, lp in zip(frame_ids, frame_values, strict=True) if lp >= self._log_threshold]
            if not keep:
                keep = [(frame_ids[0], frame_values[0])]
            if len(keep) == 1 and keep[0][0] == blank:
                self._blank_frame(keep[0][1])
            else:
                self._frame(keep, self._num_frames)
            self._num_frames += 1

    def partial(self) -> NBest:
        """Current n-best, ranked without the end-of-utterance LM terms."""
        ranked = sorted(self._beam.items(), key=lambda kv: -self._total(kv[0], kv[1]))
        return NBest([self._hypothesis(node, entry, 0.0, 0.0, 0) for node, entry in ranked[: self.cfg.nbest]])

    def finalize(self) -> NBest:
        """Final n-best: scores the last word and ``</s>``, and refunds unfinished boosts."""
        finished = []
        for node, entry in self._beam.items():
            lm_end, units_end = self._fusion.finish(node.fusion_state) if self._fusion and node.fusion_state else (0, 0)
            boost_end = self._boost.finish(node.boost_state) if self._boost and node.boost_state else 0.0
            hyp = self._hypothesis(node, entry, lm_end, boost_end, units_end)
            finished.append(hyp)
        finished.sort(key=lambda h: -h.score)
        return NBest(finished[: self.cfg.nbest])

    def _total(self, node: _Prefix, entry: list) -> float:
        return _log_add(entry[0], entry[1]) + node.fused

    def _blank_frame(self, lp: float) -> None:
        """Only blank survived pruning: every prefix just absorbs it; the ranking cannot change."""
        for entry in self._beam.values():
            entry[0] = _log_add(entry[0], entry[1]) + lp
            entry[1] = NEG_INF

    def _frame(self, candidates: list[tuple[int, float]], t: int) -> None:
        blank = self.cfg.blank_id
        known = {(node.parent, node.token): node for node in self._beam}
        nxt: dict[_Prefix, list] = {}

        def add(node: _Prefix, blank_part: float, label_part: float, timing: _Timing) -> None:
            entry = nxt.get(node)
            if entry is None:
                nxt[node] = [blank_part, label_part, timing, max(blank_part, label_part)]
                return
            entry[0] = _log_add(entry[0], blank_part)
            entry[1] = _log_add(entry[1], label_part)
            if max(blank_part, label_part) > entry[3]:  # time by the most probable contributing path
                entry[2], entry[3] = timing, max(blank_part, label_part)

        for node, (pb, pnb, timing) in self._beam.items():
            total = _log_add(pb, pnb)
            for c, lp in candidates:
                if c == blank:
                    add(node, total + lp, NEG_INF, timing)
                    continue
                if c == node.token:
                    peak = (t, lp, timing[2]) if timing is not None and lp > timing[1] else timing
                    add(node, NEG_INF, pnb + lp, peak)
                    from_prefix = pb + lp  # a repeated label needs a blank in between
                else:
                    from_prefix = total + lp
                if from_prefix == NEG_INF:
                    continue
                child = known.get((node, c))
                if child is None:
                    child = known[(node, c)] = self._extend(node, c)
                add(child, NEG_INF, from_prefix, (t, lp, timing))
        ranked = sorted(nxt.items(), key=lambda kv: -(_log_add(kv[1][0], kv[1][1]) + kv[0].fused))
        self._beam = {node: entry[:3] for node, entry in ranked[: self.cfg.beam_size]}

    def _extend(self, parent: _Prefix, token: int) -> _Prefix:
        child = _Prefix(token, parent)
        child.lm_logp, child.boost, child.units = parent.lm_logp, parent.boost, parent.units + 1
        if self._fusion is not None and parent.fusion_state is not None:
            if self.cfg.lm_unit == "word":
                child.units = parent.units + int(self._fusion.completes_unit(parent.fusion_state, token))
            logp, child.fusion_state = self._fusion.advance(parent.fusion_state, token)
            child.lm_logp += logp
        if self._boost is not None and parent.boost_state is not None:
            delta, child.boost_state = self._boost.advance(parent.boost_state, token)
            child.boost += delta
        child.fused = self._lm_weight * child.lm_logp + self.cfg.length_bonus * child.units + child.boost
        return child

    def _hypothesis(self, node: _Prefix, entry: list, lm_end: float, boost_end: float, units_end: int) -> Hypothesis:
        ctc = _log_add(entry[0], entry[1])
        lm_logp, boost, units = node.lm_logp + lm_end, node.boost + boost_end, node.units + units_end
        frames, log_probs = [], []
        timing: _Timing = entry[2]
        while timing is not None:
            frames.append(timing[0])
            log_probs.append(timing[1])
            timing = timing[2]
        frames.reverse()
        log_probs.reverse()
        return Hypothesis(
            tokens=node.tokens(),
            score=ctc + self._lm_weight * lm_logp + self.cfg.length_bonus * units + boost,
            token_log_probs=log_probs,
            token_frames=frames,
            confidence=sequence_confidence(log_probs),
            scores={"ctc": ctc, "lm": lm_logp, "length_bonus": float(units), "boost": boost},
            num_frames=self._num_frames,
        )


def ctc_prefix_beam_search(
    log_probs: Tensor,
    cfg: SearchConfig,
    *,
    pieces: Sequence[str] | None = None,
    lm: NgramLM | None = None,
    boost: PhraseBooster | None = None,
) -> NBest:
    """Offline prefix beam search of one utterance ``log_probs (T', V)``: one ``accept``, then ``finalize``."""
    search = CTCPrefixBeamSearch(cfg, pieces=pieces, lm=lm, boost=boost)
    search.accept(log_probs)
    return search.finalize()


def ctc_prefix_beam_search_batch(
    log_probs: Tensor,
    lens: Tensor,
    cfg: SearchConfig,
    *,
    pieces: Sequence[str] | None = None,
    lm: NgramLM | None = None,
    boost: PhraseBooster | None = None,
) -> list[NBest]:
    """Prefix beam search of each utterance of a padded batch ``(B, T', V)`` with ``lens (B,)``."""
    return [
        ctc_prefix_beam_search(log_probs[b, :length], cfg, pieces=pieces, lm=lm, boost=boost)
        for b, length in enumerate(lens.tolist())
    ]
