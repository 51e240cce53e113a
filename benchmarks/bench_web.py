"""Per-stream latency, WebSocket path (``--web-port``) vs gRPC path: same server, same recording, same run.

Starts ``asr-server`` as a subprocess with the web port on, then for each stream count runs that
many concurrent real-time streams over gRPC, then as many over WebSockets (the page's protocol:
a JSON start message, 100 ms binary PCM frames paced in real time, a JSON stop). Latencies are
defined as in ``bench_server.py``: partial = from sending the audio a partial needed (its end time
plus the right context) to receiving it; server = the server's own processing latency; final =
from the last chunk (and the stop message) to the final result.

    python -m benchmarks.bench_web --model models/english.pt     # writes the `web` section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np

from benchmarks.bench_server import (
    CHUNK_S,
    RATE,
    RIGHT_CONTEXT_S,
    ROOT,
    ServerProcess,
    StreamStats,
    channels,
    free_port,
    one_stream,
    percentile,
    stream_audio,
)
from benchmarks.report import machine_line, table, update_section
from protos import asr_service_pb2 as pb
from protos import asr_service_pb2_grpc as pb_grpc


async def one_web_stream(url: str, pcm: bytes, delay_s: float, stats: StreamStats) -> None:
    """One stream over the page's WebSocket protocol, paced like :func:`bench_server.one_stream`."""
    await asyncio.sleep(delay_s)
    chunk_bytes = int(CHUNK_S * RATE) * 2
    chunks = [pcm[i : i + chunk_bytes] for i in range(0, len(pcm), chunk_bytes)]
    sent_at: list[float] = []
    total_s = len(pcm) / 2 / RATE

    async def send(ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_str(json.dumps({"type": "start", "sample_rate_hz": RATE, "interim_results": True}))
        start = time.perf_counter()
        for k, chunk in enumerate(chunks):
            await asyncio.sleep(max(0.0, start + (k + 1) * CHUNK_S - time.perf_counter()))
            sent_at.append(time.perf_counter())
            await ws.send_bytes(chunk)
        await ws.send_str(json.dumps({"type": "stop"}))

    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        sender = asyncio.create_task(send(ws))
        async for message in ws:
            received = time.perf_counter()
            result = json.loads(message.data)
            if result["type"] == "error":
                stats.errors.append(result["code"])
            elif result["type"] == "result" and not result["is_final"]:
                needed = min(result["end_s"] + RIGHT_CONTEXT_S, total_s)
                k = min(len(sent_at) - 1, max(0, int(np.ceil(needed / CHUNK_S)) - 1))
                stats.partial_latency_s.append(max(0.0, received - sent_at[k]))
                stats.server_latency_s.append(result["latency_ms"] / 1e3)
            elif result["type"] == "result" and len(sent_at) == len(chunks):
                stats.final_latency_s.append(received - sent_at[-1])
        await sender
        if ws.close_code != 1000:
            stats.errors.append(f"close {ws.close_code}")


async def run_path(server: ServerProcess, web_url: str, path: str, n: int, pcm: bytes, seed: int) -> list[object]:
    stats = StreamStats()
    rng = random.Random(seed)
    delays = [rng.uniform(0, 1.0) for _ in range(n)]
    if path == "gRPC":
        opened = channels(server.address, n)
        stubs = [pb_grpc.RecognizerStub(channel) for channel in opened]
        unspecified = pb.SEARCH_METHOD_UNSPECIFIED  # the model's stored search, as the page gets
        try:
            await asyncio.gather(*(one_stream(stub, pcm, d, stats, unspecified) for stub, d in zip(stubs, delays)))
        finally:
            for channel in opened:
                await channel.close()
    else:
        await asyncio.gather(*(one_web_stream(web_url, pcm, d, stats) for d in delays))
    errors = f"{len(stats.errors)} ({', '.join(sorted(set(stats.errors)))})" if stats.errors else "0"
    latencies = (stats.partial_latency_s, stats.server_latency_s, stats.final_latency_s)
    return [path, n, *(percentile(values, q) for values in latencies for q in (50, 99)), errors]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "english.pt")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 16, 32])
    p.add_argument("--logs", type=Path, default=Path("/tmp"))
    p.add_argument("--section", default="web", help="BENCHMARKS.md section to write")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args(argv)
    if not args.model.is_file():
        print(f"model {args.model} not found; pass --model", file=sys.stderr)
        return 2
    load_average = os.getloadavg()[0]
    pcm = stream_audio()
    web_port = free_port()
    server = ServerProcess(args.model, args.logs / "bench_web.log", "--web-port", str(web_port))
    web_url = f"ws://127.0.0.1:{web_port}/v1/stream"
    rows = []
    try:
        for n in args.streams:
            for path in ("gRPC", "WebSocket"):
                rows.append(asyncio.run(run_path(server, web_url, path, n, pcm, seed=n)))
                print(rows[-1], flush=True)
    finally:
        server.stop()

    command = "python -m benchmarks.bench_web " + " ".join(argv if argv is not None else sys.argv[1:])
    headers = ["path", "streams", "partial p50", "partial p99", "server p50", "server p99", "final p50", "final p99"]
    body = (
        f"## Web page path vs gRPC (`benchmarks/bench_web.py`)\n\n"
        f"`{command.strip()}` — {machine_line()}; model `{args.model.name}` (its stored search); one server "
        f"process (`--web-port` on) and the load generator share the machine's cores over loopback (1-minute "
        f"load average {load_average:.1f} when the run started).\n\n"
        f"The same {len(pcm) / 2 / RATE:.1f} s recording per stream, 100 ms chunks paced in real time, interim "
        "results on, chunk 320 ms + right context 160 ms; gRPC streams first, then as many WebSocket streams "
        "(JSON start, binary PCM frames, JSON stop). Latencies in ms, defined as in the Server section.\n\n"
        + table([*headers, "errors"], rows)
    )
    print(body)
    if not args.no_write:
        update_section(args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
