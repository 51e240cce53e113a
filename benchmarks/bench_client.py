"""Batch transcription of a folder through the service (``asr-client transcribe``) vs the library directly.

Starts ``asr-server`` as a subprocess on loopback, then runs the CLI's batch path in-process
(``client.cli.main``, writing JSON outputs to a temporary folder, so reading files, requests,
batching on the server and writing results are all inside the timing) at each concurrency, in
the same run. The same files then go through ``Recognizer.transcribe_files`` in this process
with the server's thread count: the difference is the overhead of the service path. Each
measurement is the median of a few passes after an untimed warm-up pass.

    python -m benchmarks.bench_client --model models/english.pt --folder /data/recordings   # `client` section
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import soundfile
import torch

from asr.inference import Recognizer
from benchmarks.bench_server import ServerProcess
from benchmarks.report import machine_line, median_time, table, update_section
from client.batch import expand_inputs
from client.cli import main as asr_client

ROOT = Path(__file__).resolve().parent.parent


def time_cli(address: str, folders: list[Path], concurrency: int) -> float:
    """Wall seconds of ``asr-client transcribe FOLDER... --out TMP`` (fresh outputs: nothing skipped)."""
    with tempfile.TemporaryDirectory() as out:
        argv = ["--server", address, "transcribe", *map(str, folders), "--out", out, "--format", "json",
                "--concurrency", str(concurrency), "--no-progress"]
        start = time.perf_counter()
        code = asr_client(argv)
        seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"asr-client exited with {code}")
    return seconds


def time_library(model: Path, paths: list[Path], threads: int, repeats: int) -> float:
    torch.set_num_threads(threads)
    recognizer = Recognizer.from_checkpoint(model, device="cpu")
    return median_time(lambda: recognizer.transcribe_files(paths), repeats=repeats, warmup=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "english.pt")
    p.add_argument("--folder", type=Path, nargs="+", default=[ROOT / "samples"], help="audio folders (recursive)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per path; the median is reported")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--torch-threads", type=int, default=1, help="model threads, server and library (server default)")
    p.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args(argv)

    paths = [audio for audio, _ in expand_inputs([str(f) for f in args.folder])]
    audio_s = sum(soundfile.info(str(path)).duration for path in paths)
    load = os.getloadavg()[0]
    server = ServerProcess(args.model, args.logs / "bench_client_server.log", "--device", "cpu",
                           "--torch-threads", str(args.torch_threads))
    try:
        time_cli(server.address, args.folder, max(args.concurrency))  # warm-up
        service = {
            c: statistics.median(time_cli(server.address, args.folder, c) for _ in range(args.repeats))
            for c in args.concurrency
        }
    finally:
        server.stop()
    library_s = time_library(args.model, paths, args.torch_threads, args.repeats)

    rows = [[f"asr-client, concurrency {c}", f"{len(paths) / s:.1f}", f"{audio_s / s:.1f}", f"{s:.2f}"]
            for c, s in service.items()]
    rows.append(["library (`Recognizer.transcribe_files`)", f"{len(paths) / library_s:.1f}",
                 f"{audio_s / library_s:.1f}", f"{library_s:.2f}"])
    best = min(service.values())
    body = "\n\n".join([
        "## Client batch transcription (`benchmarks/bench_client.py`)",
        f"{machine_line()}; model `{args.model.name}`; {', '.join(f'`{f}`' for f in args.folder)} ({len(paths)} files, "
        f"{audio_s / 60:.1f} min of audio); server, client and library share the machine over loopback "
        f"(1-minute load average {load:.1f} at the start); {args.torch_threads} model thread(s) everywhere; "
        f"median of {args.repeats} passes after a warm-up.",
        table(["path", "files/s", "× real time", "wall s"], rows),
        f"Service overhead at the best concurrency: **{best / library_s:.2f}×** the library's time "
        "(reading files, gRPC, server-side decoding and batching, writing JSON outputs).",
    ])
    print(body)
    if not args.no_write:
        update_section("client", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
