"""Soak test on loopback: N concurrent real-time streams for a fixed time, plus unary traffic.

Each of ``--streams`` workers opens stream after stream for ``--seconds``, sending ~7.5 s of real
speech paced in real time (100 ms chunks) and checking that the stream ends with a final result.
Meanwhile ``--unary-clients`` loop on Recognize. The server (``python -m server``, a subprocess so
its memory and CPU can be read from /proc) is sampled every 2 s: resident memory, CPU and the
active-streams gauge. It reports streams completed, finals lost, errors by status code, unary
calls, memory after warm-up vs at the end, and whether the active-streams gauge returned to 0.

    python -m benchmarks.bench_soak                              # 200 streams x 120 s; writes the `soak` section
    python -m benchmarks.bench_soak --streams 50 --seconds 30    # a short run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.bench_server import CHUNK_S, RATE, ROOT, SAMPLES, ServerProcess, stream_audio
from benchmarks.report import machine_line, table, update_section
from protos import asr_service_pb2 as pb
from protos import asr_service_pb2_grpc as pb_grpc

CHANNELS = 4  # HTTP/2 connections the streams are spread over, as several client processes would


@dataclass
class SoakStats:
    streams_opened: int = 0
    streams_with_final: int = 0
    finals_lost: int = 0  # streams that ended OK but without a final result
    unary_ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def gauge(server: ServerProcess, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


async def one_stream(stub: pb_grpc.RecognizerStub, chunks: list[bytes], stats: SoakStats) -> None:
    async def requests() -> AsyncIterator[pb.StreamingRecognizeRequest]:
        config = pb.RecognitionConfig(encoding=pb.AUDIO_ENCODING_LINEAR16, sample_rate_hz=RATE)
        yield pb.StreamingRecognizeRequest(config=pb.StreamingConfig(config=config, interim_results=True))
        start = time.perf_counter()
        for k, chunk in enumerate(chunks):
            await asyncio.sleep(max(0.0, start + (k + 1) * CHUNK_S - time.perf_counter()))
            yield pb.StreamingRecognizeRequest(audio=chunk)

    stats.streams_opened += 1
    last_final = False
    try:
        async for response in stub.StreamingRecognize(requests(), timeout=len(chunks) * CHUNK_S + 60):
            last_final = any(r.is_final for r in response.results) or last_final and not response.results
    except grpc.RpcError as error:
        stats.errors[f"stream {error.code().name}"] += 1
        return
    if last_final:
        stats.streams_with_final += 1
    else:
        stats.finals_lost += 1


async def stream_worker(stub: pb_grpc.RecognizerStub, chunks: list[bytes], until: float, stats: SoakStats) -> None:
    await asyncio.sleep(random.uniform(0, 2.0))  # stagger the starts, as real callers arrive
    while time.monotonic() < until:
        await one_stream(stub, chunks, stats)


async def unary_worker(stub: pb_grpc.RecognizerStub, audio: bytes, until: float, stats: SoakStats) -> None:
    while time.monotonic() < until:
        try:
            await stub.Recognize(pb.RecognizeRequest(config=pb.RecognitionConfig(), audio=audio), timeout=60)
            stats.unary_ok += 1
        except grpc.RpcError as error:
            stats.errors[f"unary {error.code().name}"] += 1
        await asyncio.sleep(0.2)


async def sample_memory(pid: int, stop: asyncio.Event, stats: SoakStats) -> None:
    start = time.monotonic()
    while not stop.is_set():
        stats.rss_mb.append((time.monotonic() - start, rss_mib(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)


async def soak(server: ServerProcess, streams: int, unary_clients: int, seconds: float) -> SoakStats:
    pcm = stream_audio()
    chunk_bytes = int(CHUNK_S * RATE) * 2
    chunks = [pcm[i : i + chunk_bytes] for i in range(0, len(pcm), chunk_bytes)]
    unary_audio = sorted((SAMPLES / "librispeech").glob("*.flac"))[0].read_bytes()
    stats, stop = SoakStats(), asyncio.Event()
    channels = [aio.insecure_channel(server.address) for _ in range(CHANNELS)]
    stubs = [pb_grpc.RecognizerStub(c) for c in channels]
    until = time.monotonic() + seconds
    sampler = asyncio.create_task(sample_memory(server.process.pid, stop, stats))
    workers = [stream_worker(stubs[i % CHANNELS], chunks, until, stats) for i in range(streams)]
    workers += [unary_worker(stubs[i % CHANNELS], unary_audio, until, stats) for i in range(unary_clients)]
    await asyncio.gather(*workers)
    stop.set()
    await sampler
    for channel in channels:
        await channel.close()
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "english.pt")
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--unary-clients", type=int, default=4)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--logs", type=Path, default=Path("/tmp"))
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args(argv)
    if not args.model.is_file():
        print(f"model {args.model} not found; pass --model", file=sys.stderr)
        return 2
    random.seed(0)
    server = ServerProcess(
        args.model,
        args.logs / "bench_soak.log",
        "--torch-threads",
        str(args.torch_threads),
        "--max-concurrent-streams",
        str(max(256, args.streams + 8)),
    )
    try:
        cpu_before, start = server.cpu_seconds(), time.monotonic()
        stats = asyncio.run(soak(server, args.streams, args.unary_clients, args.seconds))
        wall_s, cpu_s = time.monotonic() - start, server.cpu_seconds() - cpu_before
        time.sleep(1.0)
        active_after = gauge(server, "asr_active_streams")
    finally:
        server.stop()
    warm = [mb for t, mb in stats.rss_mb if t >= min(20.0, args.seconds / 4)] or [mb for _, mb in stats.rss_mb]
    ok = stats.finals_lost == 0 and not stats.errors and active_after == 0
    row = [
        args.streams,
        f"{args.seconds:g}",
        args.unary_clients,
        stats.streams_opened,
        stats.streams_with_final,
        stats.finals_lost,
        dict(stats.errors) or "none",
        stats.unary_ok,
        f"{warm[0]:.0f} → {warm[-1]:.0f} (max {max(warm):.0f})",
        f"{int(active_after)}",
        f"{cpu_s / wall_s:.2f}",
        "yes" if ok else "NO",
    ]
    headers = [
        "streams",
        "seconds",
        "unary clients",
        "streams run",
        "with final",
        "finals lost",
        "errors",
        "unary OK",
        "server RSS MiB (after warm-up → end)",
        "active streams after",
        "server CPU cores",
        "held",
    ]
    body = "\n\n".join(
        [
            "## Soak (`benchmarks/bench_soak.py`)",
            f"{machine_line()}; server `python -m server` with `--torch-threads {args.torch_threads}`, "
            f"model `{args.model.name}`. Each stream worker sends ~7.5 s of speech in real time (100 ms chunks), "
            "stream after stream; a stream counts as lost if it ends without a final result.",
            table(headers, [row]),
        ]
    )
    print(body)
    if not args.no_write:
        update_section("soak", body)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
