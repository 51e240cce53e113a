"""Streaming recognition: accuracy against full context, compute per chunk, finals latency, memory.

    .venv/bin/python -m benchmarks.bench_streaming --model models/english.pt \\
        --manifest data/shared/test.jsonl [--limit 300] [--settings 320:160,320:320,640:640] [--minutes 60]

For each chunk:right-context setting (ms) it measures:

- WER of streaming (LC-BLSTM chunks, endpointing off so each test utterance gives one final)
  against full-context decoding of the same utterances with the same search;
- algorithmic latency (chunk + look-ahead) and the measured compute of one ``step_batch`` with
  ``--sessions`` concurrent sessions (p50/p99), as a fraction of the chunk's audio duration;
- end of speech → final: compute of ``finish()`` once the client ends the stream at end of
  speech (p50/p99), and, with endpointing, stream time from the end of the utterance's audio to
  the emitted final (endpoint silence + chunk quantisation + look-ahead);
- resident memory of one session over a ``--minutes`` long stream (test utterances separated by
  silence, pushed in 100 ms pieces), sampled every tenth of the stream: it must stay flat.

With ``--concat K`` only the accuracy table is measured, on multi-word streams: K consecutive test
utterances of one speaker joined with ``--gap-ms`` of silence, so that the look-ahead no longer
covers the whole stream as it does for a one-word clip. It writes the ``streaming_concat`` section.

A model trained offline only loses accuracy with short look-ahead; train with
``model.encoder.chunk_train_prob`` > 0 (LC-BLSTM training) to close the gap.
Writes the ``streaming`` section of BENCHMARKS.md (``--no-write`` to only print).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from asr.audio import load_audio
from asr.data.manifest import read_manifest
from asr.inference import Recognizer
from asr.streaming import StreamingOptions, StreamingSession, step_batch
from asr.training.evaluate import score
from benchmarks.report import machine_line, table, update_section

ROOT = Path(__file__).resolve().parent.parent
PIECE_S = 0.1  # clients send 100 ms of audio per message


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def concatenated(entries: list, waves: list[np.ndarray], k: int, gap_s: float, rate: int) -> tuple[list, list]:
    """(references, waveforms) of streams made of ``k`` consecutive utterances of one speaker each."""
    by_speaker: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        by_speaker.setdefault(entry.speaker or "?", []).append(i)
    gap = np.zeros(int(gap_s * rate), dtype=np.float32)
    refs, streams = [], []
    for indices in by_speaker.values():
        for start in range(0, len(indices) - k + 1, k):
            group = indices[start : start + k]
            refs.append(" ".join(entries[i].text for i in group))
            streams.append(np.concatenate([part for i in group for part in (waves[i], gap)][:-1]))
    return refs, streams


def stream_texts(recognizer: Recognizer, waves: list[np.ndarray], options: StreamingOptions) -> list[str]:
    """Final text of every waveform streamed as its own session, 32 sessions stepped per batch."""
    texts = []
    for start in range(0, len(waves), 32):
        sessions = [recognizer.open_stream(options) for _ in waves[start : start + 32]]
        for session, wave in zip(sessions, waves[start : start + 32], strict=True):
            session.push(wave)
        finals: list[list[str]] = [[] for _ in sessions]
        while any(s.ready() for s in sessions):
            for out, results in zip(finals, step_batch(sessions), strict=True):
                out.extend(r.transcript.text for r in results if r.is_final)
        for out, session in zip(finals, sessions, strict=True):
            out.extend(r.transcript.text for r in session.finish() if r.is_final)
            texts.append(" ".join(out))
    return texts


def _step_times(recognizer: Recognizer, waves: list[np.ndarray], options: StreamingOptions, num: int) -> list[float]:
    """Seconds per ``step_batch`` of ``num`` sessions fed one chunk of audio each per step."""
    audio = np.concatenate(waves)
    sessions = [recognizer.open_stream(options) for _ in range(num)]
    chunk = int(options.chunk_ms * recognizer.sample_rate / 1000)
    offsets = [(i * len(audio)) // max(num, 1) for i in range(num)]  # sessions at different places
    times = []
    for step in range(60):
        for session, offset in zip(sessions, offsets, strict=True):
            begin = (offset + step * chunk) % max(1, len(audio) - chunk)
            session.push(audio[begin : begin + chunk])
        if not all(s.ready() for s in sessions):
            continue
        start = time.perf_counter()
        step_batch(sessions)
        times.append(time.perf_counter() - start)
    return times[3:]  # warm-up


def _finals_latency(
    recognizer: Recognizer, waves: list[np.ndarray], options: StreamingOptions
) -> tuple[list[float], list[float]]:
    """(finish() compute seconds, endpoint delay in stream seconds) per utterance."""
    piece = int(PIECE_S * recognizer.sample_rate)
    silence = np.zeros(3 * recognizer.sample_rate, dtype=np.float32)
    finish_s, endpoint_s = [], []
    for wave in waves:
        session = recognizer.open_stream(options)
        for start in range(0, len(wave), piece):
            session.accept(wave[start : start + piece])
        begin = time.perf_counter()
        session.finish()
        finish_s.append(time.perf_counter() - begin)
        session = recognizer.open_stream(options)
        session.accept(wave)
        for start in range(0, len(silence), piece):
            if any(r.is_final for r in session.accept(silence[start : start + piece])):
                endpoint_s.append(session.audio_seconds - len(wave) / recognizer.sample_rate)
                break
    return finish_s, endpoint_s


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _memory_over_stream(
    session: StreamingSession, waves: list[np.ndarray], minutes: float
) -> list[tuple[float, float]]:
    """(stream minutes, RSS MiB) at ten points of a ``minutes`` long stream."""
    rate = session.recognizer.sample_rate
    gap = np.zeros(rate // 2, dtype=np.float32)
    piece = int(PIECE_S * rate)
    total = int(minutes * 60 * rate)
    samples: list[tuple[float, float]] = [(0.0, _rss_mib())]
    next_mark, index = total / 10, 0
    while session.audio_seconds * rate < total:
        audio = np.concatenate([waves[index % len(waves)], gap])
        index += 1
        for start in range(0, len(audio), piece):
            session.accept(audio[start : start + piece])
        if session.audio_seconds * rate >= next_mark:
            samples.append((session.audio_seconds / 60, _rss_mib()))
            next_mark += total / 10
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default=str(ROOT / "models" / "english.pt"))
    parser.add_argument("--manifest", default=str(ROOT / "data" / "shared" / "test.jsonl"))
    parser.add_argument("--limit", type=int, default=300, help="test utterances for WER (every n-th, spread evenly)")
    parser.add_argument("--settings", default="320:160,320:320,640:640", help="chunk_ms:right_context_ms,...")
    parser.add_argument("--endpoint-ms", type=int, default=300, help="endpoint silence for the latency rows")
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the memory stream")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--sessions", default="1,32,200", help="concurrent sessions per step_batch to time")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--concat", type=int, default=1, help="utterances of one speaker joined per stream (accuracy only)"
    )
    parser.add_argument("--gap-ms", type=int, default=250, help="silence between joined utterances")
    parser.add_argument("--section", default="", help="BENCHMARKS.md section (default: streaming / streaming_concat)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recognizer = Recognizer.from_checkpoint(args.model, device=args.device)
    entries = read_manifest(args.manifest)
    entries = entries[:: max(1, len(entries) // args.limit)][: args.limit]
    waves = [load_audio(e.audio, recognizer.sample_rate) for e in entries]
    refs = [e.text for e in entries]
    if args.concat > 1:
        refs, waves = concatenated(entries, waves, args.concat, args.gap_ms / 1000, recognizer.sample_rate)
    full_wer = score(refs, [t.text for t in recognizer.transcribe_batch(waves)])[0]
    settings = [tuple(int(v) for v in s.split(":")) for s in args.settings.split(",")]

    accuracy_rows: list[list[object]] = [["full context", "-", f"{100 * full_wer:.2f}", "-"]]
    speed_rows: list[list[object]] = []
    final_rows: list[list[object]] = []
    for chunk_ms, right_ms in settings:
        options = StreamingOptions(chunk_ms=chunk_ms, right_context_ms=right_ms, endpoint_silence_ms=0)
        wer = score(refs, stream_texts(recognizer, waves, options))[0]
        relative = f"{100 * (wer - full_wer) / full_wer:+.1f} %" if full_wer > 0 else "-"
        accuracy_rows.append([f"{chunk_ms} + {right_ms}", chunk_ms + right_ms, f"{100 * wer:.2f}", relative])
        if args.concat > 1:  # and as a live stream is decoded: utterances ended at pauses
            endpointed = replace(options, endpoint_silence_ms=args.endpoint_ms)
            accuracy_rows[-1].append(f"{100 * score(refs, stream_texts(recognizer, waves, endpointed))[0]:.2f}")
            continue
        for num in [int(n) for n in args.sessions.split(",")]:
            times = _step_times(recognizer, waves, options, num)
            p50, p99 = 1000 * _percentile(times, 50), 1000 * _percentile(times, 99)
            speed_rows.append([f"{chunk_ms} + {right_ms}", num, f"{p50:.1f}", f"{p99:.1f}", f"{p50 / chunk_ms:.3f}"])
        endpoint = StreamingOptions(chunk_ms=chunk_ms, right_context_ms=right_ms, endpoint_silence_ms=args.endpoint_ms)
        finish_s, endpoint_s = _finals_latency(recognizer, waves[:50], endpoint)
        final_rows.append(
            [
                f"{chunk_ms} + {right_ms}",
                f"{1000 * _percentile(finish_s, 50):.1f}",
                f"{1000 * _percentile(finish_s, 99):.1f}",
                f"{1000 * _percentile(endpoint_s, 50):.0f}" if endpoint_s else "no endpoint",
                f"{len(endpoint_s)}/{len(finish_s)}",
            ]
        )
    if args.concat > 1:
        accuracy_rows[0].append("-")
        _write_concat(args, refs, waves, accuracy_rows, recognizer.sample_rate)
        return
    chunk_ms, right_ms = settings[0]
    memory = _memory_over_stream(
        recognizer.open_stream(StreamingOptions(chunk_ms=chunk_ms, right_context_ms=right_ms)), waves, args.minutes
    )
    rss = [m for _, m in memory]
    body = "\n\n".join(
        [
            "## Streaming (LC-BLSTM)",
            f"`python -m benchmarks.bench_streaming --model {args.model} --manifest {args.manifest} "
            f"--limit {args.limit} --settings {args.settings} --minutes {args.minutes:g} --sessions {args.sessions}` — "
            f"{len(entries)} "
            f"utterances, {machine_line()}, device {args.device}.",
            "WER, streaming against full context (same greedy/beam search, endpointing off):",
            table(["chunk + look-ahead (ms)", "algorithmic latency (ms)", "WER %", "relative to full"], accuracy_rows),
            "Compute per `step_batch` (one chunk for every session, one encoder forward):",
            table(["chunk + look-ahead (ms)", "sessions", "p50 ms", "p99 ms", "p50 / chunk duration"], speed_rows),
            f"End of speech → final, {min(50, len(waves))} utterances: compute of `finish()` when the client "
            "ends the stream; "
            f"with endpointing ({args.endpoint_ms} ms), stream time from the end of the utterance's audio "
            "(which includes the recording's own trailing silence) to the final:",
            table(
                ["chunk + look-ahead (ms)", "finish p50 ms", "finish p99 ms", "endpoint p50 ms", "endpointed"],
                final_rows,
            ),
            f"Resident memory over a {args.minutes:g}-minute stream (one session, {chunk_ms} + {right_ms} ms): "
            + ", ".join(f"{minute:.1f} min {mib:.0f} MiB" for minute, mib in memory)
            + f"; growth after the first tenth: {rss[-1] - rss[min(1, len(rss) - 1)]:+.1f} MiB.",
        ]
    )
    print(body)
    if not args.no_write:
        update_section(args.section or "streaming", body)


def _write_concat(
    args: argparse.Namespace, refs: list[str], waves: list[np.ndarray], rows: list[list[object]], rate: int
) -> None:
    seconds = sum(len(w) for w in waves) / rate
    body = "\n\n".join(
        [
            f"## Streaming on multi-word streams (`{args.model}`)",
            f"`python -m benchmarks.bench_streaming --model {args.model} --manifest {args.manifest} "
            f"--limit {args.limit} --settings {args.settings} --concat {args.concat} --gap-ms {args.gap_ms}"
            f"{' --section ' + args.section if args.section else ''}` — "
            f"{len(waves)} streams of {args.concat} utterances of one speaker joined by {args.gap_ms} ms of silence "
            f"({seconds / max(1, len(waves)):.1f} s each on average, {sum(len(r.split()) for r in refs)} words), "
            f"{machine_line()}, device {args.device}. Full context decodes each whole stream offline; the look-ahead "
            "no longer covers the stream, unlike the one-word clips above. The last column decodes the streams "
            f"as a live stream is: an utterance ends after {args.endpoint_ms} ms of CTC blanks over quiet audio, "
            "and the encoder restarts there.",
            table(
                [
                    "chunk + look-ahead (ms)",
                    "algorithmic latency (ms)",
                    "WER %",
                    "relative to full",
                    f"WER % with endpointing ({args.endpoint_ms} ms)",
                ],
                rows,
            ),
        ]
    )
    print(body)
    if not args.no_write:
        update_section(args.section or "streaming_concat", body)


if __name__ == "__main__":
    main()
