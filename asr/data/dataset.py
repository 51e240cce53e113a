"""Map-style dataset: a manifest entry → decoded waveform and target token ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from asr.audio import load_audio
from asr.config import AudioConfig
from asr.data.augment import WaveformAugment
from asr.data.manifest import ManifestEntry
from asr.errors import ManifestError
from asr.tokenizer import Tokenizer


@dataclass(frozen=True)
class Utterance:
    waveform: Tensor  # (N,) float32 at the configured sample rate
    tokens: Tensor  # (U,) long: target ids, no blank or eos inside
    index: int  # position in the entry list, so results can be matched back to the manifest


class SpeechDataset(Dataset[Utterance]):
    """Decodes audio on access (in DataLoader workers), so memory stays flat for any corpus size.

    Targets are encoded once up front: a transcript that normalises to nothing (only punctuation)
    would give CTC an empty target, so it is refused here with the audio path in the message.
    """

    def __init__(
        self,
        entries: Sequence[ManifestEntry],
        tokenizer: Tokenizer,
        audio_cfg: AudioConfig,
        augment: WaveformAugment | None = None,
    ) -> None:
        self.entries = list(entries)
        self.audio_cfg = audio_cfg
        self.augment = augment
        self.epoch = 0
        self._tokenizer = tokenizer
        self._tokens = [self._encode(tokenizer, e) for e in self.entries]
        self._plan: list[list[tuple[int, float]]] = self._plan_concatenation()

    @staticmethod
    def _encode(tokenizer: Tokenizer, entry: ManifestEntry) -> list[int]:
        tokens = tokenizer.encode(entry.text)
        if not tokens:
            raise ManifestError(f"transcript of {entry.audio} has no words after normalisation: {entry.text!r}")
        return tokens

    @property
    def durations(self) -> list[float]:
        """Seconds per example this epoch (with concatenation partners and gaps), for :class:`DurationBucketSampler`."""
        return [
            e.duration + sum(gap + self.entries[other].duration for other, gap in plan)
            for e, plan in zip(self.entries, self._plan, strict=True)
        ]

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws depend on (seed, epoch, index); call before each epoch's iterator
        (and before reading :attr:`durations`, which the epoch's concatenations change)."""
        self.epoch = epoch
        self._plan = self._plan_concatenation()

    def _plan_concatenation(self) -> list[list[tuple[int, float]]]:
        """(partner index, silence before it) per example this epoch; drawn up front so that the
        sampler can bucket examples by their real, concatenated duration."""
        if self.augment is None or self.augment.cfg.concat_prob <= 0 or len(self.entries) < 2:
            return [[] for _ in self.entries]
        cfg = self.augment.cfg
        plans = []
        for index, entry in enumerate(self.entries):
            rng = np.random.default_rng([self.augment.seed, self.epoch, index, 1])  # apart from the waveform draws
            plan: list[tuple[int, float]] = []
            if rng.random() < cfg.concat_prob:
                total = entry.duration
                for other in rng.integers(0, len(self.entries), size=int(rng.integers(1, cfg.concat_max))).tolist():
                    gap = float(rng.uniform(*cfg.concat_gap_s))
                    if total + gap + self.entries[other].duration <= cfg.concat_max_s:
                        plan.append((other, gap))
                        total += gap + self.entries[other].duration
            plans.append(plan)
        return plans

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Utterance:
        wave = self._load(index)
        tokens = self._tokens[index]
        if self._plan[index]:
            wave, tokens = self._concatenate(index, wave)
        if self.augment is not None:
            wave = self.augment(wave, self.augment.rng_for(self.epoch, index))
        return Utterance(torch.from_numpy(wave), torch.tensor(tokens, dtype=torch.long), index)

    def _load(self, index: int) -> np.ndarray:
        entry = self.entries[index]
        return load_audio(entry.audio, self.audio_cfg.sample_rate, max_duration_s=self.audio_cfg.max_duration_s)

    def _concatenate(self, index: int, wave: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """``wave`` followed by this epoch's partners, each after its silence; transcripts joined."""
        rate = self.audio_cfg.sample_rate
        parts, texts = [wave], [self.entries[index].text]
        for other, gap in self._plan[index]:
            parts += [np.zeros(int(gap * rate), dtype=np.float32), self._load(other)]
            texts.append(self.entries[other].text)
        return np.concatenate(parts), self._tokenizer.encode(" ".join(texts))
