"""Fine-tuning evidence: the shipped model adapted to a speaker it never trained on.

    .venv/bin/python -m benchmarks.bench_finetune [--model models/english.pt] [--steps 300]
        [--freeze-encoder-layers 0] [--limit 0] [--threads 2]

Default speaker: FSDD's "lucas", whom the shared split keeps out of training (his recordings
are the FSDD dev and test halves). The model is fine-tuned on his dev half and scored on his
test half, which it never sees, and on the Speech Commands test set, the base task, to show
what fine-tuning costs elsewhere. Writes the ``finetune`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from asr.config import FinetuneConfig
from asr.data.manifest import read_manifest, write_manifest
from asr.training.finetune import finetune
from benchmarks.bench_export import ROOT, default_model
from benchmarks.report import machine_line, table, update_section

SHARED = ROOT / "data" / "shared"


def limited(path: Path, limit: int, out: Path) -> str:
    """``path``, or a copy of its first ``limit`` entries under ``out``."""
    if not limit:
        return str(path)
    return str(write_manifest(out / f"{path.stem}_first{limit}.jsonl", read_manifest(path)[:limit]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=default_model())
    parser.add_argument("--train", type=Path, default=SHARED / "dev_fsdd.jsonl", help="the speaker's training half")
    parser.add_argument("--held-out", type=Path, default=SHARED / "test_fsdd.jsonl", help="the speaker's other half")
    parser.add_argument("--base-test", type=Path, default=SHARED / "test_speech_commands.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "finetune_lucas")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.0, help="0 = the base model's peak / 10")
    parser.add_argument("--freeze-encoder-layers", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="first N utterances of each manifest (0 = all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train, held_out, base_test = (limited(p, args.limit, args.out) for p in (args.train, args.held_out, args.base_test))
    cfg = FinetuneConfig(learning_rate=args.lr, max_steps=args.steps, freeze_encoder_layers=args.freeze_encoder_layers)
    start = time.perf_counter()
    result = finetune(
        args.model, [train], [held_out], args.out, cfg,
        base_test=[base_test], overrides=[f"training.threads={args.threads}"], progress=False,
    )  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    names = {
        "user dev": f"speaker held-out (`{args.held_out.name}`)",
        "base test": f"base test (`{args.base_test.name}`)",
    }
    rows = [
        [names[r.name], r.utterances, f"{100 * r.wer_before:.2f}", f"{100 * r.wer_after:.2f}"]
        + [f"{r.loss_before:.3f}", f"{r.loss_after:.3f}"]
        for r in result.rows
    ]
    body = (
        "## Fine-tuning on an unseen speaker\n\n"
        f"Base `{args.model.name}` fine-tuned on `{args.train.name}` ({len(read_manifest(train))} utterances) for "
        f"{result.steps} steps, peak LR {'base / 10' if not args.lr else args.lr}, "
        f"{args.freeze_encoder_layers} frozen encoder layer(s), {minutes:.1f} min; {machine_line()}.\n"
        "`python -m benchmarks.bench_finetune` · the held-out half is never trained on nor used for selection.\n\n"
        + table(["set", "utterances", "WER before %", "WER after %", "loss before", "loss after"], rows)
    )
    print(body)
    if not args.no_write:
        update_section("finetune", body)


if __name__ == "__main__":
    main()
