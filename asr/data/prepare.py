"""Train/dev/test manifests for the shared corpora, with the splits their README prescribes.

The hidden evaluation uses speakers of these corpora that are not on disk, so every split here
is speaker-disjoint (except LJSpeech, one speaker, whose optional dev set is flagged as such):
that is what makes dev and test numbers predict the hidden score.
"""

from __future__ import annotations

import logging
from pathlib import Path

from asr.data.corpora import Split, import_manifest
from asr.data.manifest import ManifestEntry, write_manifest

logger = logging.getLogger(__name__)

FSDD_HELD_OUT_SPEAKER = "lucas"  # README: lucas takes 0–24 dev, 25–49 test; the other four train
FSDD_FIRST_TEST_TAKE = 25
SPEECH_COMMANDS_DEV_PREFIXES = "d"  # README: speaker id starting with d → dev, e/f → test, others train
SPEECH_COMMANDS_TEST_PREFIXES = "ef"
# Folder name under the shared data root → corpus name used in output file names.
SHARED_CORPORA = {
    "fsdd": "fsdd",
    "speech_commands": "speech_commands",
    "ljspeech_sample": "ljspeech",
    "librispeech_sample": "librispeech",
}


def split_fsdd(entries: list[ManifestEntry]) -> Split:
    """lucas takes 0–24 → dev, 25–49 → test; jackson, nicolas, theo, yweweler → train."""
    split = Split([], [], [])
    for entry in entries:
        if entry.speaker != FSDD_HELD_OUT_SPEAKER:
            split.train.append(entry)
        elif _fsdd_take(entry) < FSDD_FIRST_TEST_TAKE:
            split.dev.append(entry)
        else:
            split.test.append(entry)
    return split


def split_speech_commands(entries: list[ManifestEntry]) -> Split:
    """By the first character of the speaker hash: 0–9 and a–c train, d dev, e/f test."""
    split = Split([], [], [])
    for entry in entries:
        first = entry.speaker[:1].lower()
        if first and first in SPEECH_COMMANDS_TEST_PREFIXES:
            split.test.append(entry)
        elif first and first in SPEECH_COMMANDS_DEV_PREFIXES:
            split.dev.append(entry)
        else:
            split.train.append(entry)
    return split


def split_ljspeech(entries: list[ManifestEntry], *, dev_count: int = 0) -> Split:
    """All train, or the last ``dev_count`` utterances as a *same-speaker* dev set (28/4 with 4)."""
    if dev_count <= 0:
        return Split(list(entries), [], [])
    ordered = sorted(entries, key=lambda e: e.audio)
    return Split(ordered[:-dev_count], ordered[-dev_count:], [])


def prepare_shared_corpora(root: Path, out_dir: Path, *, ljspeech_dev_count: int = 0) -> dict[str, Path]:
    """Write ``{train,dev,test}.jsonl`` and ``{split}_{corpus}.jsonl`` under ``out_dir``.

    ``root`` holds the shared corpus folders (fsdd, speech_commands, ljspeech_sample,
    librispeech_sample; missing ones are skipped with a warning). LibriSpeech is dev only (too
    small to train on). A same-speaker LJSpeech dev set (``ljspeech_dev_count`` > 0) is written as
    ``dev_ljspeech.jsonl`` but kept out of the combined ``dev.jsonl``, which stays
    speaker-disjoint from train. Returns ``{"train": path, "dev": path, "dev_fsdd": path, ...}``;
    audio paths inside are absolute.
    """
    root, out_dir = Path(root), Path(out_dir)
    combined: dict[str, list[ManifestEntry]] = {"train": [], "dev": [], "test": []}
    written: dict[str, Path] = {}
    for folder, corpus in SHARED_CORPORA.items():
        if not (root / folder / "manifest.jsonl").is_file():
            logger.warning("no %s corpus at %s; skipping it", corpus, root / folder)
            continue
        split = _split_shared(corpus, import_manifest(root / folder), ljspeech_dev_count)
        for name, part in split._asdict().items():
            if not part:
                continue
            written[f"{name}_{corpus}"] = write_manifest(out_dir / f"{name}_{corpus}.jsonl", part)
            if corpus == "ljspeech" and name == "dev":
                logger.warning("dev_ljspeech.jsonl is the training speaker: not speaker-independent, not in dev.jsonl")
                continue
            combined[name].extend(part)
    for name, part in combined.items():
        written[name] = write_manifest(out_dir / f"{name}.jsonl", part)
        logger.info("%s: %d utterances, %.1f min", name, len(part), sum(e.duration for e in part) / 60)
    return written


def _split_shared(corpus: str, entries: list[ManifestEntry], ljspeech_dev_count: int) -> Split:
    if corpus == "fsdd":
        return split_fsdd(entries)
    if corpus == "speech_commands":
        return split_speech_commands(entries)
    if corpus == "ljspeech":
        return split_ljspeech(entries, dev_count=ljspeech_dev_count)
    return Split([], list(entries), [])  # librispeech sample: 10 sentences, dev only


def _fsdd_take(entry: ManifestEntry) -> int:
    """The take number from ``{digit}_{speaker}_{take}.wav``."""
    return int(Path(entry.audio).stem.rsplit("_", 1)[-1])
