"""Training on precomputed front-end features: the cache the trainer reads instead of running the front end.

With a frozen pretrained front end (``model.frontend.type: whisper_encoder``) the features of an
utterance never change, so the trainer computes them once per speed factor
(:class:`~asr.data.feature_cache.FeatureCache`) and every epoch reads float16 files; only
SpecAugment, applied after CMVN as always, varies per step. Validation still runs the real front
end through :class:`~asr.inference.Recognizer`, so dev numbers are the numbers users get.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from asr.config import ExperimentConfig, to_dict
from asr.data.feature_cache import FeatureCache, frontend_key
from asr.data.manifest import ManifestEntry, read_manifest
from asr.errors import ConfigError
from asr.features.frontend import Frontend, build_frontend
from asr.features.normalization import GlobalCMVN, cmvn_from_features


def check_cache_config(cfg: ExperimentConfig) -> None:
    """Augmentations that change the audio cannot apply to cached features: refuse them rather than skip them."""
    augment = cfg.data.augment
    if augment.gain_db or augment.noise_prob or augment.concat_prob:
        raise ConfigError(
            "data.feature_cache is set, but data.augment has gain_db, noise_prob or concat_prob above 0: cached "
            "features cannot be re-augmented per step; set them to 0 (speed_factors are cached as copies) "
            "or drop data.feature_cache"
        )


def open_feature_cache(cfg: ExperimentConfig, frontend: Frontend) -> FeatureCache:
    """The cache folder for this front end, keyed by everything its features depend on."""
    check_cache_config(cfg)
    description = {
        "frontend": frontend.identity(),
        "frontend_config": to_dict(cfg.model.frontend),
        "sample_rate": cfg.audio.sample_rate,
    }
    if cfg.model.frontend.type == "logmel":
        description["features"] = to_dict(cfg.features)
    speeds = cfg.data.augment.speed_factors or (1.0,)
    return FeatureCache(cfg.data.feature_cache, frontend_key(description), speeds)


def cached_cmvn(cache: FeatureCache, entries: Sequence[ManifestEntry], dim: int, count: int, seed: int) -> GlobalCMVN:
    """CMVN statistics over ``count`` random training utterances' cached features at normal speed (or the first)."""
    speed = 1.0 if 1.0 in cache.speeds else cache.speeds[0]
    sample = random.Random(seed).sample(list(entries), min(count, len(entries)))
    return cmvn_from_features((cache.load(e, speed).astype("float32") for e in sample), dim)


def build_feature_cache(cfg: ExperimentConfig, *, progress: bool = True) -> tuple[FeatureCache, int]:
    """Precompute the cache of ``cfg``'s training manifests (``asr features``), so training starts at once.

    Returns the cache and how many files were computed; rerunning it computes only what is missing.
    """
    if not cfg.data.feature_cache:
        raise ConfigError("data.feature_cache is empty; set it to a folder (--set data.feature_cache=data/features)")
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)
    frontend = build_frontend(cfg.model, cfg.features, cfg.audio.sample_rate)
    cache = open_feature_cache(cfg, frontend)
    lo, hi = cfg.data.min_duration_s, cfg.data.max_duration_s
    entries = [e for path in cfg.data.train_manifests for e in read_manifest(path) if lo <= e.duration <= hi]
    return cache, cache.build(entries, frontend, cfg.audio, progress)
