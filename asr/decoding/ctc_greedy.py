"""Best-path CTC decoding: argmax per frame, collapse repeats, drop blanks."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from asr.decoding.hypothesis import Hypothesis, NBest, sequence_confidence


def ctc_greedy_search(log_probs: Tensor, *, blank_id: int = 0) -> NBest:
    """Greedy decoding of one utterance ``log_probs (T', V)``."""
    lens = torch.tensor([log_probs.size(0)])
    return ctc_greedy_search_batch(log_probs.unsqueeze(0), lens, blank_id=blank_id)[0]


def ctc_greedy_search_batch(log_probs: Tensor, lens: Tensor, *, blank_id: int = 0) -> list[NBest]:
    """Greedy decoding of a padded batch ``log_probs (B, T', V)`` with ``lens (B,)``.

    The argmax runs once over the whole batch; each token's frame is the peak of its run of
    identical argmax frames, so a token held for many frames is timed where the model is surest.
    """
    values, ids = log_probs.detach().float().max(dim=-1)  # (B, T')
    values_np, ids_np = values.cpu().numpy(), ids.cpu().numpy()
    results = []
    for b, length in enumerate(lens.tolist()):
        hyp = collapse_best_path(ids_np[b, :length], values_np[b, :length], blank_id)
        results.append(NBest([hyp]))
    return results


def collapse_best_path(ids: np.ndarray, values: np.ndarray, blank_id: int) -> Hypothesis:
    """Per-frame best ``ids`` and their log-probs ``values`` (T',) → one token per non-blank run,
    timed at the run's peak frame (streaming keeps these per chunk and collapses them again)."""
    num_frames = len(ids)
    if num_frames == 0:
        return Hypothesis([], 0.0, [], [], scores={"ctc": 0.0}, num_frames=0)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])  # first frame of each run
    run_of_frame = np.cumsum(np.r_[True, ids[1:] != ids[:-1]]) - 1  # (T',) run index
    run_max = np.maximum.reduceat(values, starts)  # (runs,)
    at_peak = values == run_max[run_of_frame]
    _, first_peak = np.unique(run_of_frame[at_peak], return_index=True)
    peaks = np.flatnonzero(at_peak)[first_peak]  # (runs,) first frame reaching the run maximum
    keep = ids[starts] != blank_id
    tokens = ids[starts][keep].tolist()
    frames = peaks[keep].tolist()
    token_log_probs = values[peaks[keep]].astype(float).tolist()
    path_score = float(values.astype(np.float64).sum())  # best path, not the summed CTC likelihood
    return Hypothesis(
        tokens=tokens,
        score=path_score,
        token_log_probs=token_log_probs,
        token_frames=frames,
        confidence=sequence_confidence(token_log_probs),
        scores={"ctc": path_score},
        num_frames=num_frames,
    )
