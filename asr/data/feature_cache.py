"""Front-end features precomputed once and read back by training: float16 ``.npy`` files on disk.

A frozen pretrained front end gives the same features every epoch, so computing them on the fly
would spend most of a CPU training step on an encoder that never changes. The cache holds one
file per (audio content, speed factor) under a folder per front end:

    <cache>/<front-end key>/<ab>/<audio sha256>_s<speed>.npy       (T, F) float16

The front-end key hashes everything the features depend on (front-end identity and config,
sample rate, cache format), and the audio key hashes the file's bytes, so an edited recording,
other weights or another layer choice can never be served stale features. Files are written
atomically, so an interrupted build resumes where it stopped. Speed perturbation (Ko et al.
2015) is applied to the waveform *before* the front end, as it is in on-the-fly training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from asr.audio import load_audio
from asr.config import AudioConfig
from asr.data.augment import perturb_speed
from asr.data.manifest import ManifestEntry
from asr.errors import ConfigError, ManifestError
from asr.tokenizer import Tokenizer

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the file layout or feature semantics change

FeatureFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # (B, N) waves, (B,) lens -> (B, T, F), (B,)


def frontend_key(description: dict[str, Any]) -> str:
    """Short stable hash of a JSON-able description of the front end (identity, config, rate)."""
    text = json.dumps({"cache_format": CACHE_FORMAT, **description}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def audio_key(path: str | Path) -> str:
    """sha256 of the audio file's bytes (content, not name or time: a re-encoded file is new audio)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:32]


class FeatureCache:
    """Features of a manifest's utterances at each speed factor, for one front end."""

    def __init__(self, root: str | Path, key: str, speeds: Sequence[float]) -> None:
        if not speeds or any(s <= 0 for s in speeds):
            raise ConfigError(f"feature cache speed factors must be positive, got {list(speeds)}")
        self.folder = Path(root) / key
        self.speeds = tuple(float(s) for s in speeds)
        self._audio_keys: dict[str, str] = {}

    def path(self, entry: ManifestEntry, speed: float) -> Path:
        key = self._audio_keys.get(entry.audio)
        if key is None:
            key = self._audio_keys[entry.audio] = audio_key(entry.audio)
        return self.folder / key[:2] / f"{key}_s{speed:g}.npy"

    def load(self, entry: ManifestEntry, speed: float) -> np.ndarray:
        """``(T, F)`` float16 features; ManifestError if they were never built."""
        path = self.path(entry, speed)
        try:
            return np.load(path)
        except (OSError, ValueError) as exc:
            raise ManifestError(f"no cached features for {entry.audio} at speed {speed:g} ({path}): {exc}") from exc

    def missing(self, entries: Sequence[ManifestEntry]) -> list[tuple[ManifestEntry, float]]:
        return [(e, s) for e in entries for s in self.speeds if not self.path(e, s).is_file()]

    def build(self, entries: Sequence[ManifestEntry], features: FeatureFn, audio: AudioConfig, progress: bool) -> int:
        """Compute and store every missing (entry, speed); returns how many were computed.

        One utterance per front-end pass: for a transformer front end on CPU, a padded batch
        costs more than its rows alone (masked attention over the padding), and there is no
        per-call overhead worth amortising.
        """
        todo = self.missing(entries)
        if not todo:
            return 0
        log.info("computing %d cached feature files in %s", len(todo), self.folder)
        for entry, speed in tqdm(todo, disable=not progress, desc="features", unit="utt"):
            wave = load_audio(entry.audio, audio.sample_rate, max_duration_s=audio.max_duration_s)
            wave = perturb_speed(wave, speed, audio.sample_rate)
            with torch.no_grad():
                feats, feat_lens = features(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
            self._write(self.path(entry, speed), feats[0, : int(feat_lens[0])].cpu().numpy())
        return len(todo)

    @staticmethod
    def _write(path: Path, feats: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, feats.astype(np.float16))
        tmp.replace(path)


@dataclass(frozen=True)
class FeatureUtterance:
    feats: Tensor  # (T, F) float16, as cached
    tokens: Tensor  # (U,) long
    index: int
    num_samples: int  # of the (speed-perturbed) audio the features came from, for throughput logging


class CachedFeatureDataset(Dataset[FeatureUtterance]):
    """Like :class:`~asr.data.dataset.SpeechDataset`, but yields cached features at a random speed factor.

    The speed is drawn from (seed, epoch, index), so resumed runs see the same copies.
    """

    def __init__(
        self,
        entries: Sequence[ManifestEntry],
        tokenizer: Tokenizer,
        cache: FeatureCache,
        sample_rate: int,
        seed: int = 0,
    ) -> None:
        self.entries = list(entries)
        self.cache = cache
        self.sample_rate = sample_rate
        self.seed = seed
        self.epoch = 0
        self._tokens = []
        for entry in self.entries:
            tokens = tokenizer.encode(entry.text)
            if not tokens:
                raise ManifestError(f"transcript of {entry.audio} has no words after normalisation: {entry.text!r}")
            self._tokens.append(tokens)

    @property
    def durations(self) -> list[float]:
        return [e.duration for e in self.entries]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> FeatureUtterance:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        speed = float(rng.choice(self.cache.speeds))
        entry = self.entries[index]
        feats = torch.from_numpy(self.cache.load(entry, speed))
        num_samples = round(entry.duration * self.sample_rate / speed)
        return FeatureUtterance(feats, torch.tensor(self._tokens[index], dtype=torch.long), index, num_samples)
