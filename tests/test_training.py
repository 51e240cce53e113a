"""Training for real, small: memorising real utterances, exact resume, and DDP ranks kept in sync."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asr.checkpoint import load_checkpoint, read_payload
from asr.config import load_config
from asr.data.manifest import read_manifest, write_manifest
from asr.errors import ConfigError
from asr.inference import Recognizer
from asr.tokenizer import normalize_text
from asr.training.trainer import train

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "asr" / "configs"


@pytest.fixture(scope="module")
def eight_utterances(tmp_path_factory):
    """The 8 shortest bundled real recordings (several speakers and corpora)."""
    entries = sorted(read_manifest(ROOT / "samples" / "manifest.jsonl"), key=lambda e: e.duration)[:8]
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_manifest(path, entries)
    return path, entries


def tiny_config(manifest: Path, **overrides):
    base = {"data.train_manifests": [str(manifest)], "training.threads": 1, "seed": 0}
    base.update(overrides)
    return load_config(CONFIGS / "tiny_ctc.yaml", base)


@pytest.fixture(scope="module")
def memorised(eight_utterances, tmp_path_factory):
    manifest, entries = eight_utterances
    out = tmp_path_factory.mktemp("run")
    cfg = tiny_config(manifest, **{"training.max_steps": 250, "data.dev_manifests": [str(manifest)]})
    result = train(cfg, out, progress=False)
    return result, entries, out


def test_tiny_model_memorises_eight_real_utterances(memorised):
    result, entries, _ = memorised
    recognizer = Recognizer.from_checkpoint(result.model_path, device="cpu")
    texts = [t.text for t in recognizer.transcribe_files([e.audio for e in entries])]
    assert texts == [normalize_text(e.text) for e in entries]
    assert result.best_dev_wer == 0.0


def test_run_folder_holds_model_metrics_and_config(memorised):
    _, _, out = memorised
    assert (out / "model.pt").is_file() and (out / "last.pt").is_file() and (out / "config.yaml").is_file()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert any('"dev_wer"' in line for line in lines) and any('"loss"' in line for line in lines)
    bundle = load_checkpoint(out / "model.pt")
    assert bundle.metrics["dev_wer"] == 0.0
    assert "training_state" not in read_payload(out / "model.pt")  # the shipped file carries no optimizer state


def test_resume_continues_exactly(eight_utterances, tmp_path):
    manifest, _ = eight_utterances
    cfg = tiny_config(manifest, **{"training.max_steps": 12, "training.save_every": 6, "training.eval_every": 6})
    straight = train(cfg, tmp_path / "straight", progress=False)
    interrupted = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, max_steps=6))
    train(interrupted, tmp_path / "resumed", progress=False)
    resumed = train(cfg, tmp_path / "resumed", progress=False)
    assert resumed.steps == straight.steps == 12
    a = read_payload(tmp_path / "straight" / "last.pt")["model"]
    b = read_payload(tmp_path / "resumed" / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_two_process_ddp_keeps_weights_identical(eight_utterances, tmp_path):
    manifest, _ = eight_utterances
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "tests" / "ddp_worker.py"),
        str(manifest),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    initial = torch.load(tmp_path / "initial0.pt", weights_only=True)
    assert any(not torch.equal(rank0[k], initial[k]) for k in rank0), "training changed nothing"
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key


def test_bf16_on_cpu_trains_and_fp16_on_cpu_is_refused(eight_utterances, tmp_path):
    manifest, _ = eight_utterances
    cfg = tiny_config(manifest, **{"training.max_steps": 4, "training.precision": "bf16"})
    assert train(cfg, tmp_path / "bf16", progress=False).steps == 4
    cfg16 = tiny_config(manifest, **{"training.max_steps": 4, "training.precision": "fp16"})
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        train(cfg16, tmp_path / "fp16", progress=False)


def test_no_training_manifest_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="train_manifests"):
        train(load_config(CONFIGS / "tiny_ctc.yaml"), tmp_path, progress=False)
