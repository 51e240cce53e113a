"""Word start/end times and confidences from token frames, and CTC forced alignment.

Token frames are encoder frames (T'); ``frame_shift_s`` is the encoder's frame shift (feature
hop x subsampling). CTC emits each token as a one-frame spike, so a word spans from its first
token's frame to one frame after its last token's frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from torch import Tensor

from asr.decoding.hypothesis import Hypothesis, WordTiming

WORD_START = "\u2581"


def word_timings(
    hyp: Hypothesis, pieces: Sequence[str], frame_shift_s: float, *, num_frames: int | None = None
) -> list[WordTiming]:
    """Words of ``hyp`` with start/end seconds (monotonic, within ``num_frames``) and confidence.

    A piece starting with "▁" begins a word; the lone "▁" only separates; pieces like "<unk>"
    are skipped. Word confidence is the mean token posterior ``exp(log p)`` of the word's tokens.
    ``num_frames`` defaults to ``hyp.num_frames``; when both are 0 the last token frame bounds it.
    """
    frames = list(hyp.token_frames) or [0] * len(hyp.tokens)
    limit = num_frames or hyp.num_frames or (max(frames) + 1 if frames else 0)
    words: list[tuple[str, list[int], list[float]]] = []
    new_word = True
    for token, frame, logp in zip(hyp.tokens, frames, _padded(hyp.token_log_probs, len(hyp.tokens)), strict=True):
        piece = pieces[token]
        if piece.startswith("<") and piece.endswith(">"):
            continue
        if piece.startswith(WORD_START):
            piece, new_word = piece[len(WORD_START) :], True
        if not piece:
            continue
        if new_word or not words:
            words.append((piece, [frame], [logp]))
            new_word = False
        else:
            text, word_frames, word_log_probs = words[-1]
            words[-1] = (text + piece, [*word_frames, frame], [*word_log_probs, logp])
    return _to_seconds(words, frame_shift_s, limit)


def _padded(values: Sequence[float], length: int) -> list[float]:
    return list(values[:length]) + [0.0] * max(0, length - len(values))


def _to_seconds(words: list[tuple[str, list[int], list[float]]], shift: float, limit: int) -> list[WordTiming]:
    out: list[WordTiming] = []
    end_bound = limit * shift
    previous_end = 0.0
    for text, frames, log_probs in words:
        start = min(max(frames[0] * shift, previous_end), end_bound)
        end = min(max((frames[-1] + 1) * shift, start), end_bound)
        confidence = float(np.clip(np.mean(np.exp(np.minimum(log_probs, 0.0))), 0.0, 1.0))
        out.append(WordTiming(text, round(start, 6), round(end, 6), confidence))
        previous_end = end
    return out


def ctc_align(log_probs: Tensor, tokens: Sequence[int], *, blank_id: int = 0) -> tuple[list[int], list[float]]:
    """Viterbi forced alignment of ``tokens`` to CTC ``log_probs (T', V)``.

    Returns each token's peak frame within its aligned segment and its log-prob there, so
    hypotheses from attention search get timestamps too. When the tokens cannot fit in T'
    frames (U plus repeats > T'), frames are spread evenly instead.
    """
    lp = log_probs.detach().double().cpu().numpy()  # (T', V)
    num_frames, num_tokens = lp.shape[0], len(tokens)
    if num_tokens == 0:
        return [], []
    repeats = sum(1 for a, b in pairwise(tokens) if a == b)
    if num_tokens + repeats > num_frames:
        frames = np.linspace(0, max(num_frames - 1, 0), num_tokens).round().astype(int).tolist()
        return frames, [float(lp[f, t]) if num_frames else 0.0 for f, t in zip(frames, tokens, strict=True)]
    path = _viterbi(lp, list(tokens), blank_id)  # (T',) state index per frame; odd = token (s-1)//2
    frames, log_probs_out = [], []
    for i, token in enumerate(tokens):
        seg = np.flatnonzero(path == 2 * i + 1)
        peak = int(seg[np.argmax(lp[seg, token])])
        frames.append(peak)
        log_probs_out.append(float(lp[peak, token]))
    return frames, log_probs_out


def _viterbi(lp: np.ndarray, tokens: list[int], blank_id: int) -> np.ndarray:
    """Best CTC state path over the extended label sequence (blank, y1, blank, ..., yU, blank)."""
    ext = np.full(2 * len(tokens) + 1, blank_id)
    ext[1::2] = tokens
    num_states, num_frames = len(ext), lp.shape[0]
    skip_ok = np.zeros(num_states, dtype=bool)  # s-2 -> s allowed: a label different from s-2's
    skip_ok[3::2] = ext[3::2] != ext[1:-2:2]
    score = np.full(num_states, -np.inf)
    score[:2] = lp[0, ext[:2]]
    back = np.zeros((num_frames, num_states), dtype=np.int64)
    idx = np.arange(num_states)
    for t in range(1, num_frames):
        stay, step = score, np.r_[-np.inf, score[:-1]]
        skip = np.where(skip_ok, np.r_[-np.inf, -np.inf, score[:-2]], -np.inf)
        choices = np.stack([stay, step, skip])  # (3, S)
        best = choices.argmax(axis=0)
        back[t] = idx - best
        score = choices[best, idx] + lp[t, ext]
    state = num_states - 1 if score[-1] >= score[-2] else num_states - 2
    path = np.empty(num_frames, dtype=np.int64)
    for t in range(num_frames - 1, -1, -1):
        path[t] = state
        state = back[t, state]
    return path
