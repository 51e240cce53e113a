"""Train/dev/test manifests for the shared corpora, with the splits their README prescribes.

The hidden evaluation uses speakers of these corpora that are not on disk, so every split here
is speaker-disjoint (except LJSpeech, one speaker, whose optional dev set is flagged as such):
that is what makes dev and test numbers predict the hidden score.

Every corpus folder under the shared root that ships a ``manifest.jsonl`` is taken. A manifest
whose every line carries ``split`` is split by that field (the corpus publisher's speaker-disjoint
choice); the four older corpora have no such field and keep their README rules; any other corpus
without it is split by speaker with :func:`~asr.data.corpora.split_by_speaker`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from asr.data.corpora import Split, import_manifest, split_by_speaker
from asr.data.manifest import ManifestEntry, write_manifest

logger = logging.getLogger(__name__)

FSDD_HELD_OUT_SPEAKER = "lucas"  # README: lucas takes 0–24 dev, 25–49 test; the other four train
FSDD_FIRST_TEST_TAKE = 25
SPEECH_COMMANDS_DEV_PREFIXES = "d"  # README: speaker id starting with d → dev, e/f → test, others train
SPEECH_COMMANDS_TEST_PREFIXES = "ef"
# Folders whose corpus name in output file names differs from the folder name.
CORPUS_NAMES = {"ljspeech_sample": "ljspeech", "librispeech_sample": "librispeech"}
# Dev/test fractions for a corpus with neither a ``split`` field nor a README rule here.
DEFAULT_HELD_OUT_FRACTION = 0.1


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


def split_by_field(entries: list[ManifestEntry]) -> Split:
    """The corpus's own ``split`` field: "train", "dev" or "test" on every line."""
    split = Split([], [], [])
    for entry in entries:
        getattr(split, entry.split).append(entry)
    return split


def prepare_shared_corpora(root: Path, out_dir: Path, *, ljspeech_dev_count: int = 0) -> dict[str, Path]:
    """Write ``{train,dev,test}.jsonl`` and ``{split}_{corpus}.jsonl`` under ``out_dir``.

    ``root`` holds the shared corpus folders; each one with a ``manifest.jsonl`` is used (the
    corpus name is the folder name, except ljspeech_sample → ljspeech and librispeech_sample →
    librispeech). The LibriSpeech sample is dev only (too small to train on). A same-speaker
    LJSpeech dev set (``ljspeech_dev_count`` > 0) is written as ``dev_ljspeech.jsonl`` but kept
    out of the combined ``dev.jsonl``, which stays speaker-disjoint from train. Returns
    ``{"train": path, "dev": path, "dev_fsdd": path, ...}``; audio paths inside are absolute.
    """
    root, out_dir = Path(root), Path(out_dir)
    combined: dict[str, list[ManifestEntry]] = {"train": [], "dev": [], "test": []}
    written: dict[str, Path] = {}
    folders = sorted(p for p in root.iterdir() if (p / "manifest.jsonl").is_file()) if root.is_dir() else []
    if not folders:
        logger.warning("no corpus folder with a manifest.jsonl under %s", root)
    for folder in folders:
        corpus = CORPUS_NAMES.get(folder.name, folder.name)
        split = _split_shared(corpus, import_manifest(folder), ljspeech_dev_count)
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
    if entries and all(e.split for e in entries):
        return split_by_field(entries)
    if any(e.split for e in entries):
        logger.warning("%s: only some lines carry 'split'; splitting the whole corpus by its rules instead", corpus)
    if corpus == "fsdd":
        return split_fsdd(entries)
    if corpus == "speech_commands":
        return split_speech_commands(entries)
    if corpus == "ljspeech":
        return split_ljspeech(entries, dev_count=ljspeech_dev_count)
    if corpus == "librispeech":
        return Split([], list(entries), [])  # 10 sentences: dev only
    return split_by_speaker(entries, DEFAULT_HELD_OUT_FRACTION, DEFAULT_HELD_OUT_FRACTION)


def _fsdd_take(entry: ManifestEntry) -> int:
    """The take number from ``{digit}_{speaker}_{take}.wav``."""
    return int(Path(entry.audio).stem.rsplit("_", 1)[-1])
