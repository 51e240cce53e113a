"""Duration bucketing (padded-seconds cap, determinism, coverage, DDP shards) and padding collate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from asr.config import AudioConfig, AugmentConfig
from asr.data.augment import WaveformAugment
from asr.data.batching import TOKEN_PAD, DurationBucketSampler, collate
from asr.data.dataset import SpeechDataset, Utterance
from asr.data.manifest import read_manifest
from asr.tokenizer import CharTokenizer


def durations(n: int = 200, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(np.concatenate([np.full(n // 2, 1.0), rng.uniform(0.3, 12.0, n - n // 2)]))


def padded_seconds(batch: list[int], lengths: list[float]) -> float:
    return len(batch) * max(lengths[i] for i in batch)


def test_every_batch_respects_the_padded_seconds_cap() -> None:
    lengths = durations()
    sampler = DurationBucketSampler(lengths, max_batch_seconds=20.0, seed=1)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert all(padded_seconds(b, lengths) <= 20.0 for b in sampler)


def test_each_epoch_covers_every_item_exactly_once() -> None:
    lengths = durations()
    sampler = DurationBucketSampler(lengths, max_batch_seconds=30.0, seed=0)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        indices = [i for batch in sampler for i in batch]
        assert sorted(indices) == list(range(len(lengths)))
        assert len(sampler) == len(list(sampler))


def test_same_seed_and_epoch_give_the_same_batches_and_epochs_differ() -> None:
    lengths = durations()
    a = DurationBucketSampler(lengths, 30.0, seed=7)
    b = DurationBucketSampler(lengths, 30.0, seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(DurationBucketSampler(lengths, 30.0, seed=8)) != first


def test_equal_length_items_are_regrouped_each_epoch() -> None:
    sampler = DurationBucketSampler([1.0] * 40, 4.0, seed=0)
    groups = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        groups.append({frozenset(b) for b in sampler})
    assert groups[0] != groups[1]


def test_sort_first_epoch_runs_short_batches_first_then_shuffles() -> None:
    lengths = durations()
    sampler = DurationBucketSampler(lengths, 30.0, seed=0, sort_first_epoch=True)
    longest = [max(lengths[i] for i in b) for b in sampler]
    assert longest == sorted(longest)
    sampler.set_epoch(1)
    longest = [max(lengths[i] for i in b) for b in sampler]
    assert longest != sorted(longest)


def test_without_shuffle_batches_are_in_duration_order() -> None:
    lengths = [3.0, 1.0, 2.0, 1.0]
    assert list(DurationBucketSampler(lengths, 4.0, shuffle=False)) == [[1, 3], [2], [0]]


def test_an_item_longer_than_the_cap_gets_a_batch_of_its_own() -> None:
    batches = list(DurationBucketSampler([1.0, 50.0, 1.0], 10.0, shuffle=False))
    assert [1] in batches and sorted(i for b in batches for i in b) == [0, 1, 2]


def test_ddp_ranks_get_equal_counts_and_disjoint_shards_covering_everything() -> None:
    lengths = durations(157)
    shards = [
        list(DurationBucketSampler(lengths, 15.0, seed=3, num_replicas=3, rank=r, drop_last=True)) for r in range(3)
    ]
    assert len({len(s) for s in shards}) == 1
    seen = [i for shard in shards for batch in shard for i in batch]
    assert len(seen) == len(set(seen))
    padded = [list(DurationBucketSampler(lengths, 15.0, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(s) for s in padded}) == 1
    assert {i for shard in padded for batch in shard for i in batch} == set(range(len(lengths)))


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rank"):
        DurationBucketSampler([1.0], 10.0, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="max_batch_seconds"):
        DurationBucketSampler([1.0], 0.0)


def test_collate_pads_waves_with_zeros_and_tokens_with_minus_one() -> None:
    items = [
        Utterance(torch.ones(5), torch.tensor([3, 4]), 7),
        Utterance(torch.full((3,), 2.0), torch.tensor([5, 6, 7, 8]), 2),
    ]
    batch = collate(items)
    assert batch.waves.shape == (2, 5) and batch.waves.dtype == torch.float32
    assert batch.waves[1].tolist() == [2.0, 2.0, 2.0, 0.0, 0.0]
    assert batch.wave_lens.tolist() == [5, 3] and batch.token_lens.tolist() == [2, 4]
    assert batch.tokens.tolist() == [[3, 4, TOKEN_PAD, TOKEN_PAD], [5, 6, 7, 8]]
    assert batch.indices == [7, 2]


def test_dataloader_over_the_real_samples(samples) -> None:
    entries = read_manifest(samples.manifest)
    tokenizer = CharTokenizer.from_texts(e.text for e in entries)
    dataset = SpeechDataset(entries, tokenizer, AudioConfig())
    sampler = DurationBucketSampler(dataset.durations, max_batch_seconds=8.0, seed=0)
    batches = list(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate))
    assert sorted(i for b in batches for i in b.indices) == list(range(len(entries)))
    for batch in batches:
        assert batch.waves.shape[1] == int(batch.wave_lens.max())
        for row, index in enumerate(batch.indices):
            assert tokenizer.decode(batch.tokens[row, : batch.token_lens[row]].tolist()) == tokenizer.decode(
                tokenizer.encode(entries[index].text)
            )
    lucas = samples.speakers.index("lucas")
    assert dataset[lucas].waveform.shape[0] == 2 * sf.info(samples.paths[lucas]).frames  # 8 kHz FSDD → 16 kHz


def test_dataset_augmentation_depends_only_on_seed_epoch_and_index(samples) -> None:
    entries = read_manifest(samples.manifest)[:2]
    tokenizer = CharTokenizer.from_texts(e.text for e in entries)
    augment = WaveformAugment(AugmentConfig(noise_prob=1.0), 16000, seed=5)
    dataset = SpeechDataset(entries, tokenizer, AudioConfig(), augment=augment)
    first = dataset[1].waveform
    assert torch.equal(dataset[1].waveform, first)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1].waveform, first)


def test_concatenation_joins_real_utterances_with_silences_and_transcripts(samples) -> None:
    entries = read_manifest(samples.manifest)[:6]
    tokenizer = CharTokenizer.from_texts(e.text for e in entries)
    plain = AugmentConfig(speed_factors=(1.0,), gain_db=0.0, noise_prob=0.0)
    joined = SpeechDataset(
        entries, tokenizer, AudioConfig(), augment=WaveformAugment(replace(plain, concat_prob=1.0, concat_max=3), 16000)
    )
    alone = SpeechDataset(entries, tokenizer, AudioConfig(), augment=WaveformAugment(plain, 16000))
    lengths = [alone[i].waveform.shape[0] for i in range(len(entries))]
    texts = [tokenizer.decode(tokenizer.encode(e.text)) for e in entries]
    for index in range(len(entries)):
        item = joined[index]
        words = tokenizer.decode(item.tokens.tolist()).split()
        assert words[0] == texts[index] and 1 <= len(words) <= 3 and set(words) <= set(texts)
        parts = [texts.index(w) for w in words]  # the sample transcripts are distinct single words
        audio = sum(lengths[i] for i in parts)
        gaps = item.waveform.shape[0] - audio
        assert (len(words) - 1) * 0.1 * 16000 <= gaps <= (len(words) - 1) * 0.6 * 16000
        assert torch.equal(item.waveform[: lengths[index]], alone[index].waveform)  # the utterance itself comes first
        assert torch.equal(joined[index].waveform, item.waveform)  # seeded by (seed, epoch, index)
        assert joined.durations[index] == pytest.approx(item.waveform.shape[0] / 16000, abs=0.01)  # what batching sees
