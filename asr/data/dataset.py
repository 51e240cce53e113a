"""Map-style dataset: a manifest entry → decoded waveform and target token ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
        self._tokens = [self._encode(tokenizer, e) for e in self.entries]

    @staticmethod
    def _encode(tokenizer: Tokenizer, entry: ManifestEntry) -> list[int]:
        tokens = tokenizer.encode(entry.text)
        if not tokens:
            raise ManifestError(f"transcript of {entry.audio} has no words after normalisation: {entry.text!r}")
        return tokens

    @property
    def durations(self) -> list[float]:
        """Seconds per entry, for :class:`DurationBucketSampler`."""
        return [e.duration for e in self.entries]

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws depend on (seed, epoch, index); call before each epoch's iterator."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Utterance:
        entry = self.entries[index]
        wave = load_audio(entry.audio, self.audio_cfg.sample_rate, max_duration_s=self.audio_cfg.max_duration_s)
        if self.augment is not None:
            wave = self.augment(wave, self.augment.rng_for(self.epoch, index))
        return Utterance(torch.from_numpy(wave), torch.tensor(self._tokens[index], dtype=torch.long), index)
