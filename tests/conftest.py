"""Shared fixtures: the bundled real recordings in ``samples/`` (never /work/shared)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"


@dataclass(frozen=True)
class Samples:
    root: Path
    manifest: Path
    paths: list[Path]  # absolute, in manifest order
    texts: list[str]  # transcripts as the corpora give them
    speakers: list[str]
    durations: list[float]


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def samples() -> Samples:
    records = [json.loads(line) for line in (SAMPLES_DIR / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    return Samples(
        root=SAMPLES_DIR,
        manifest=SAMPLES_DIR / "manifest.jsonl",
        paths=[SAMPLES_DIR / r["audio"] for r in records],
        texts=[r["text"] for r in records],
        speakers=[r["speaker"] for r in records],
        durations=[r["duration"] for r in records],
    )


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CTC model trained once per test session on the bundled samples (about 15 s on 2 cores).

    It memorises the short samples, so tests can assert exact transcripts through every layer
    (library, CLI, server, client) without shipping a test model.
    """
    from asr.config import load_config
    from asr.data.manifest import read_manifest, write_manifest
    from asr.training.trainer import train

    out = tmp_path_factory.mktemp("tiny_model")
    entries = sorted(read_manifest(SAMPLES_DIR / "manifest.jsonl"), key=lambda e: e.duration)[:8]
    manifest = write_manifest(out / "train.jsonl", entries)
    cfg = load_config(
        SAMPLES_DIR.parent / "asr" / "configs" / "tiny_ctc.yaml",
        {"data.train_manifests": [str(manifest)], "training.max_steps": 250, "training.threads": 1, "seed": 0},
    )
    return train(cfg, out / "run", progress=False).model_path
