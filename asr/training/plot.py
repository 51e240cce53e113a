"""Loss and dev-WER curves of a run (``asr plot``), drawn from its ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

from asr.errors import ConfigError


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; is {run_dir} a training run folder?")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_metrics(run_dir: Path, out: Path | None = None) -> Path:
    """Two panels: training loss (and its CTC/attention parts) and dev WER/CER, against steps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("asr plot needs matplotlib: pip install 'asr-service[plot]'") from exc
    records = read_metrics(run_dir)
    train = [r for r in records if "loss" in r]
    dev = [r for r in records if "dev_wer" in r]
    fig, (ax_loss, ax_wer) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "ctc", "attention"):
        points = [(r["step"], r[key]) for r in train if key in r]
        if points:
            ax_loss.plot(*zip(*points), label=key)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss per utterance")
    ax_loss.set_yscale("log")
    if train:
        ax_loss.legend()
    for key in ("dev_wer", "dev_cer"):
        points = [(r["step"], 100 * r[key]) for r in dev]
        if points:
            ax_wer.plot(*zip(*points), marker="o", label=key.replace("dev_", "dev ").upper())
    ax_wer.set_xlabel("step")
    ax_wer.set_ylabel("%")
    if dev:
        ax_wer.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = out or run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
