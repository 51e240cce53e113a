"""WER and real-time factor of the deployment forms of one model, next to float32.

    .venv/bin/python -m benchmarks.bench_export [--model models/english.pt] [--manifest data/shared/test.jsonl]
        [--limit 300] [--threads 1]

Variants: the float32 checkpoint, its int8-dynamic and bfloat16 checkpoints (through the same
``Recognizer`` the server uses), and the TorchScript and ONNX Runtime graphs (ONNX only when
onnx/onnxruntime are installed). Every variant decodes the same preloaded utterances one at a
time (batch 1, the server's latency case) with CTC greedy search, so the RTF compares compute
alone. Writes the ``export`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from asr.audio import load_audio
from asr.checkpoint import load_checkpoint
from asr.config import SearchConfig
from asr.data.manifest import read_manifest
from asr.export import ExportedModel, export_graph, quantize_checkpoint
from asr.inference import Recognizer
from asr.training.evaluate import score
from benchmarks.report import machine_line, table, update_section

ROOT = Path(__file__).resolve().parent.parent
GREEDY = SearchConfig(method="ctc_greedy")


def default_model() -> Path:
    shipped = ROOT / "models" / "english.pt"
    return shipped if shipped.is_file() else ROOT / "runs" / "shared_ctc" / "model.pt"


def run_variant(transcribe: Callable[[np.ndarray], str], waves: Sequence[np.ndarray]) -> tuple[list[str], float]:
    """Texts and total decode seconds, one utterance at a time after one warm-up call."""
    transcribe(waves[0])
    texts, seconds = [], 0.0
    for wave in waves:
        start = time.perf_counter()
        texts.append(transcribe(wave))
        seconds += time.perf_counter() - start
    return texts, seconds


def variants(model: Path, work: Path, threads: int) -> dict[str, tuple[Path, Callable[[np.ndarray], str]]]:
    """name -> (file on disk, transcribe one waveform)."""

    def recognizer(path: Path) -> Callable[[np.ndarray], str]:
        rec = Recognizer.from_checkpoint(path, device="cpu")
        return lambda wave: rec.transcribe_batch([wave], GREEDY)[0].text

    def graph(folder: Path) -> Callable[[np.ndarray], str]:
        exported = ExportedModel(folder, threads=threads)
        return lambda wave: exported.transcribe([wave], GREEDY)[0]

    found = {"float32": (model, recognizer(model))}
    for kind, name in (("int8_dynamic", "int8 dynamic"), ("bf16", "bf16")):
        path = quantize_checkpoint(model, work / f"model_{kind}.pt", kind)
        found[name] = (path, recognizer(path))
    bundle = load_checkpoint(model)
    formats = ["torchscript"]
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
        formats.append("onnx")
    for fmt in formats:
        path = export_graph(bundle, work / fmt, fmt)  # type: ignore[arg-type]
        found[f"{fmt} (fp32)" if fmt == "torchscript" else "onnx runtime (fp32)"] = (path, graph(work / fmt))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=default_model())
    parser.add_argument("--manifest", type=Path, default=ROOT / "data" / "shared" / "test.jsonl")
    parser.add_argument("--limit", type=int, default=300, help="first N utterances (0 = all)")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    entries = read_manifest(args.manifest)
    entries = entries[: args.limit] if args.limit else entries
    waves = [load_audio(e.audio) for e in entries]
    audio_s = sum(len(w) for w in waves) / 16000
    rows: list[list[object]] = []
    reference_rtf = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, transcribe) in variants(args.model, Path(tmp), args.threads).items():
            texts, seconds = run_variant(transcribe, waves)
            wer, cer, *_ = score([e.text for e in entries], texts)
            rtf = seconds / audio_s
            reference_rtf = reference_rtf or rtf
            size = path.stat().st_size / 1e6
            rows.append(
                [
                    name,
                    f"{size:.2f}",
                    f"{100 * wer:.2f}",
                    f"{100 * cer:.2f}",
                    f"{rtf:.4f}",
                    f"{reference_rtf / rtf:.2f}×",
                ]
            )
            print(" | ".join(map(str, rows[-1])), flush=True)
    body = (
        "## Export and quantisation\n\n"
        f"Model `{args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model}`, "
        f"{len(entries)} utterances ({audio_s:.0f} s) of `{args.manifest.name}`, batch 1, CTC greedy, "
        f"{args.threads} thread(s); {machine_line()}.\n"
        "`python -m benchmarks.bench_export` · int8/bf16 are checkpoints loaded by `Recognizer.from_checkpoint` "
        "(what the server runs); graphs come from `asr export` (frontend + CMVN + encoder + CTC in one graph).\n\n"
        + table(["variant", "file MB", "WER %", "CER %", "RTF", "speed vs fp32"], rows)
    )
    print(body)
    if not args.no_write:
        update_section("export", body)


if __name__ == "__main__":
    main()
