"""Duration-bucketed batches and the padding collate function.

A fixed batch size either wastes most of a batch on padding (1 s words next to 10 s sentences)
or runs out of memory on the longest utterances; capping *padded seconds* per batch (batch size ×
longest item) keeps the memory of every step about the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from asr.data.dataset import Utterance
from asr.data.feature_cache import FeatureUtterance

logger = logging.getLogger(__name__)

TOKEN_PAD = -1  # padding value of Batch.tokens; the models mask it out
_DURATION_JITTER = 0.05  # ±5 % noise on sort keys: batch composition varies per epoch, padding stays small


@dataclass
class Batch:
    waves: Tensor  # (B, N) float32, zero-padded; (B, 0) when the batch carries cached features instead
    wave_lens: Tensor  # (B,) long: valid samples per row (of the audio the features came from)
    tokens: Tensor  # (B, U) long, padded with TOKEN_PAD
    token_lens: Tensor  # (B,) long
    indices: list[int]  # dataset indices, to match results back to manifest entries
    feats: Tensor | None = None  # (B, T, F) precomputed front-end features (asr.data.feature_cache), zero-padded
    feat_lens: Tensor | None = None  # (B,) long

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(
            self.waves.to(device, non_blocking=non_blocking),
            self.wave_lens.to(device, non_blocking=non_blocking),
            self.tokens.to(device, non_blocking=non_blocking),
            self.token_lens.to(device, non_blocking=non_blocking),
            self.indices,
            move(self.feats),
            move(self.feat_lens),
        )


def collate(items: Sequence[Utterance]) -> Batch:
    """Pad a list of utterances into one :class:`Batch`."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    wave_lens = torch.tensor([u.waveform.shape[0] for u in items], dtype=torch.long)
    waves = torch.zeros(len(items), int(wave_lens.max()), dtype=torch.float32)  # (B, N)
    for row, u in enumerate(items):
        waves[row, : u.waveform.shape[0]] = u.waveform
    tokens, token_lens = _pad_tokens([u.tokens for u in items])
    return Batch(waves, wave_lens, tokens, token_lens, [u.index for u in items])


def collate_features(items: Sequence[FeatureUtterance]) -> Batch:
    """Pad cached-feature utterances into one :class:`Batch` (``feats`` float16 as stored)."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    feat_lens = torch.tensor([u.feats.shape[0] for u in items], dtype=torch.long)
    feats = torch.zeros(len(items), int(feat_lens.max()), items[0].feats.shape[1], dtype=items[0].feats.dtype)
    for row, u in enumerate(items):
        feats[row, : u.feats.shape[0]] = u.feats
    tokens, token_lens = _pad_tokens([u.tokens for u in items])
    wave_lens = torch.tensor([u.num_samples for u in items], dtype=torch.long)
    return Batch(torch.zeros(len(items), 0), wave_lens, tokens, token_lens, [u.index for u in items], feats, feat_lens)


def _pad_tokens(sequences: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """``(B, U)`` padded with TOKEN_PAD, and ``(B,)`` lengths."""
    token_lens = torch.tensor([t.shape[0] for t in sequences], dtype=torch.long)
    tokens = torch.full((len(sequences), int(token_lens.max())), TOKEN_PAD, dtype=torch.long)
    for row, t in enumerate(sequences):
        tokens[row, : t.shape[0]] = t
    return tokens, token_lens


class DurationBucketSampler(Sampler[list[int]]):
    """Batches of indices whose padded duration (size × longest) stays within ``max_batch_seconds``.

    Each epoch the items are sorted by duration with a little seeded jitter, cut greedily into
    batches, and the batch order is shuffled (``shuffle``); with ``sort_first_epoch`` epoch 0
    is sorted exactly and runs shortest first (SortaGrad). An item longer than the cap forms a
    batch of its own.

    DDP: every rank computes the same batch list from (seed, epoch) and takes every
    ``num_replicas``-th batch from ``rank``. The list is padded by repeating batches from its
    start so that all ranks run the same number of steps (otherwise the collective ops of the
    rank with one more batch hang); ``drop_last`` drops the remainder instead.
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_batch_seconds: float,
        *,
        shuffle: bool = True,
        seed: int = 0,
        sort_first_epoch: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        if max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds must be positive, got {max_batch_seconds}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, num_replicas={num_replicas})")
        self.durations = np.asarray(durations, dtype=np.float64)
        self.max_batch_seconds = max_batch_seconds
        self.shuffle = shuffle
        self.seed = seed
        self.sort_first_epoch = sort_first_epoch
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None
        too_long = int((self.durations > max_batch_seconds).sum())
        if too_long:
            logger.warning(
                "%d utterance(s) exceed max_batch_seconds=%g; each gets a batch alone", too_long, max_batch_seconds
            )

    def set_epoch(self, epoch: int, durations: Sequence[float] | None = None) -> None:
        """Batches for ``epoch``; ``durations`` replaces the per-item seconds when they change by epoch
        (concatenation augmentation)."""
        self.epoch = epoch
        if durations is not None:
            self.durations = np.asarray(durations, dtype=np.float64)
            self._cache = None

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._rank_batches())

    def __len__(self) -> int:
        return len(self._rank_batches())

    def _rank_batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._shard(self._epoch_batches()))
        return self._cache[1]

    def _epoch_batches(self) -> list[list[int]]:
        """Every batch of this epoch, identical on all ranks."""
        if not self.shuffle or (self.sort_first_epoch and self.epoch == 0):
            return self._pack(np.argsort(self.durations, kind="stable"))
        rng = np.random.default_rng([self.seed, self.epoch])
        keys = self.durations * (1 + rng.uniform(-_DURATION_JITTER, _DURATION_JITTER, self.durations.shape))
        batches = self._pack(np.argsort(keys, kind="stable"))
        return [batches[i] for i in rng.permutation(len(batches))]

    def _pack(self, order: np.ndarray) -> list[list[int]]:
        """Greedy cut of a duration-sorted order; the running max is kept as items may be out of order by the jitter."""
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0.0
        for index in order.tolist():
            duration = float(self.durations[index])
            if current and (len(current) + 1) * max(longest, duration) > self.max_batch_seconds:
                batches.append(current)
                current, longest = [], 0.0
            current.append(index)
            longest = max(longest, duration)
        if current:
            batches.append(current)
        return batches

    def _shard(self, batches: list[list[int]]) -> list[list[int]]:
        if self.num_replicas == 1:
            return batches
        if self.drop_last:
            batches = batches[: len(batches) - len(batches) % self.num_replicas]
        elif batches and len(batches) % self.num_replicas:
            extra = self.num_replicas - len(batches) % self.num_replicas
            batches = batches + [batches[i % len(batches)] for i in range(extra)]
        return batches[self.rank :: self.num_replicas]
