"""Trained models side by side on the same held-out sets: WER/CER per set, offline and streaming.

    .venv/bin/python -m benchmarks.bench_models \\
        --model "shipped=models/english.pt" --model "real only=runs/shared_ctc/model.pt" \\
        --model "real + synthetic=runs/shared_ctc_synth/model.pt" \\
        [--manifest data/shared/test_fsdd.jsonl ...] [--stream 320:160,320:320] \\
        [--section models --title "..."] [--note "how each model was trained"]

This is how recipe questions are answered honestly (does synthetic speech help on real
speakers it never heard? what does chunked training cost offline?): every model is decoded
with its own default search on the same speaker-disjoint sets, in one run. ``--stream`` adds
streaming WER on the first manifest (LC-BLSTM, endpointing off) per chunk:look-ahead setting.
Writes the ``--section`` section of BENCHMARKS.md (``--no-write`` to only print).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from asr.audio import load_audio
from asr.data.manifest import read_manifest
from asr.inference import Recognizer
from asr.streaming import StreamingOptions
from asr.training.evaluate import evaluate, score
from benchmarks.bench_streaming import stream_texts
from benchmarks.report import machine_line, parse_models, table, update_section

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETS = (
    "data/shared/test_fsdd.jsonl",
    "data/shared/test_speech_commands.jsonl",
    "data/shared/test.jsonl",
    "data/shared/dev_librispeech.jsonl",
)


def stream_wer(recognizer: Recognizer, manifest: str, chunk_ms: int, right_ms: int) -> float:
    """WER of one streaming session per utterance (``bench_streaming.stream_texts``), endpointing off."""
    entries = read_manifest(manifest)
    options = StreamingOptions(chunk_ms=chunk_ms, right_context_ms=right_ms, endpoint_silence_ms=0)
    waves = [load_audio(e.audio, recognizer.sample_rate) for e in entries]
    return score([e.text for e in entries], stream_texts(recognizer, waves, options))[0]


def training_summary(checkpoint: str) -> str:
    """Steps and wall-clock hours of the run that wrote ``checkpoint`` (its folder's metrics.jsonl), or "".

    Wall time sums the gaps between consecutive log records, leaving out gaps over 30 minutes
    (an interrupted run waiting to be resumed); it is on whatever else the machine was running.
    """
    path = Path(checkpoint).parent / "metrics.jsonl"
    if not path.is_file():
        return ""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    times = sorted(r["time"] for r in records if "time" in r)
    seconds = sum(b - a for a, b in zip(times, times[1:]) if b - a < 1800)
    steps = max((r.get("step", 0) for r in records), default=0)
    return f"{steps} steps, {seconds / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH", help="repeatable")
    parser.add_argument("--manifest", action="append", help="held-out manifest (repeatable; default: shared sets)")
    parser.add_argument("--stream", default="", help="chunk_ms:right_context_ms,... for streaming WER (first set)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--section", default="models")
    parser.add_argument("--title", default="Trained models on the same held-out sets")
    parser.add_argument("--note", default="", help="a paragraph under the tables (how the models differ)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = parse_models(args.model)
    manifests = args.manifest or [str(ROOT / m) for m in DEFAULT_SETS]
    missing = [m for m in manifests if not Path(m).is_file()]
    if missing:
        sys.exit(f"missing manifests {missing}; run `asr prepare shared ../shared/data --out data/shared` first")
    settings = [tuple(int(v) for v in s.split(":")) for s in args.stream.split(",") if s]
    set_names = [Path(m).stem for m in manifests]

    rows = []
    for name, path in models:
        recognizer = Recognizer.from_checkpoint(path, device="cpu")
        cfg = recognizer.search_config
        search = cfg.method + (f" + LM {cfg.lm_weight:g}" if cfg.lm_weight else "")
        cells: list[object] = [name, f"`{path}`", search, training_summary(path)]
        for manifest in manifests:
            report = evaluate(recognizer, read_manifest(manifest))
            cells.append(f"{100 * report.wer:.2f} / {100 * report.cer:.2f}")
            print(f"{name} {Path(manifest).stem}: {report.summary()}", flush=True)
        for chunk_ms, right_ms in settings:
            wer = stream_wer(recognizer, manifests[0], chunk_ms, right_ms)
            cells.append(f"{100 * wer:.2f}")
            print(f"{name} streaming {chunk_ms}+{right_ms} ms on {set_names[0]}: WER {100 * wer:.2f} %", flush=True)
        rows.append(cells)
    headers = [
        "model",
        "checkpoint",
        "default search",
        "training",
        *(f"{n} WER / CER %" for n in set_names),
        *(f"{set_names[0]} streaming {c} + {r} ms WER %" for c, r in settings),
    ]
    command = "python -m benchmarks.bench_models " + " ".join(f'--model "{m}"' for m in args.model)
    command += "".join(f" --manifest {m}" for m in args.manifest or [])
    if args.stream:
        command += f" --stream {args.stream}"
    if args.section != "models":
        command += f' --section {args.section} --title "{args.title}"'
    parts = [
        f"## {args.title}",
        f"`{command}` — {machine_line()}. Each model decodes with its own stored default search; "
        "streaming rows use LC-BLSTM chunks with endpointing off (one final per utterance).",
        table(headers, rows),
    ]
    if args.note:
        parts.append(args.note)
    body = "\n\n".join(parts)
    print(body)
    if not args.no_write:
        update_section(args.section, body)


if __name__ == "__main__":
    main()
