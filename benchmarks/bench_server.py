"""Server benchmark on loopback: N concurrent real-time streams, and Recognize throughput with the batcher on vs off.

Runs ``asr-server`` as a subprocess (so its CPU use can be read from /proc) and drives it from one
grpc.aio event loop, which paces every stream's audio in real time (100 ms chunks sent when they
would have been captured live). Per stream count it reports partial-result latency (from sending
the audio a partial needed — its end time plus the right context — to receiving it), the
server's own processing latency, time to final (from the last chunk to the final result), server
CPU use and errors. Then 32 concurrent clients loop on Recognize against a server with the
batcher on (``max_batch_size`` 32) and one with it off (1), in the same run.

    python -m benchmarks.bench_server --model models/english.pt        # writes the `server` section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import torch
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from asr.audio import load_audio
from asr.inference import Recognizer
from benchmarks.report import machine_line, median_time, table, update_section
from protos import asr_service_pb2 as pb
from protos import asr_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
RATE = 16000
CHUNK_S = 0.1
# What every request asks for; "default" leaves the model's stored search (the shipped model: beam + LM).
METHODS = {
    "default": "SEARCH_METHOD_UNSPECIFIED",
    "ctc_greedy": "SEARCH_METHOD_CTC_GREEDY",
    "ctc_prefix_beam": "SEARCH_METHOD_CTC_PREFIX_BEAM",
}
RIGHT_CONTEXT_S = 0.16  # the server's default right_context_ms
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (Linux): [0] state, [1] parent pid, [11:13] CPU ticks."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of a process and of each live descendant (server workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError):
                continue  # exited while scanning
    seconds, todo = {}, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = _stat(current)
        except OSError:
            continue
        seconds[current] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        todo.extend(children.get(current, []))
    return seconds


class ServerProcess:
    """``python -m server`` on a free loopback port, waited on until its health check says SERVING."""

    def __init__(self, model: Path, log: Path, *flags: str) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.metrics_port = free_port()
        command = [
            sys.executable,
            "-m",
            "server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            self.address.rsplit(":", 1)[1],
            "--metrics-port",
            str(self.metrics_port),
            "--log-level",
            "WARNING",
            "--grace-period-s",
            "2",
            *flags,
        ]
        self._log = log.open("w")
        self.process = subprocess.Popen(command, cwd=ROOT, stderr=self._log)
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"asr-server exited; see {log}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        return
                except grpc.RpcError:
                    time.sleep(0.3)
        raise RuntimeError(f"asr-server did not become healthy; see {log}")

    def cpu_seconds(self) -> dict[int, float]:
        return cpu_seconds(self.process.pid)

    def batch_totals(self, kind: str) -> tuple[float, float]:
        """(forward passes, items) so far for ``kind`` (recognize / step), from the /metrics endpoint."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        totals = {"count": 0.0, "sum": 0.0}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                for key in totals:
                    if sample.name == f"asr_batch_size_{key}" and sample.labels.get("kind") == kind:
                        totals[key] += sample.value
        return totals["count"], totals["sum"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._log.close()


def stream_audio(repeats: int = 1) -> bytes:
    """``repeats`` × ~7.5 s of real speech (two LibriSpeech utterances with a pause), as LINEAR16 at 16 kHz."""
    waves = [load_audio(p, RATE) for p in sorted((SAMPLES / "librispeech").glob("*.flac"))]
    silence = np.zeros(int(0.5 * RATE), dtype=np.float32)
    audio = np.tile(np.concatenate([waves[0], silence, *waves[1:], silence]), repeats)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


@dataclass
class StreamStats:
    partial_latency_s: list[float] = field(default_factory=list)
    server_latency_s: list[float] = field(default_factory=list)
    final_latency_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def one_stream(stub: pb_grpc.RecognizerStub, pcm: bytes, delay_s: float, stats: StreamStats, method: str) -> None:
    await asyncio.sleep(delay_s)
    chunk_bytes = int(CHUNK_S * RATE) * 2
    chunks = [pcm[i : i + chunk_bytes] for i in range(0, len(pcm), chunk_bytes)]
    sent_at: list[float] = []
    total_s = len(pcm) / 2 / RATE

    async def requests() -> AsyncIterator[pb.StreamingRecognizeRequest]:
        config = pb.RecognitionConfig(encoding=pb.AUDIO_ENCODING_LINEAR16, sample_rate_hz=RATE, search_method=method)
        yield pb.StreamingRecognizeRequest(config=pb.StreamingConfig(config=config, interim_results=True))
        start = time.perf_counter()
        for k, chunk in enumerate(chunks):
            await asyncio.sleep(max(0.0, start + (k + 1) * CHUNK_S - time.perf_counter()))
            sent_at.append(time.perf_counter())
            yield pb.StreamingRecognizeRequest(audio=chunk)

    try:
        async for response in stub.StreamingRecognize(requests(), timeout=total_s + 60):
            received = time.perf_counter()
            for result in response.results:
                if not result.is_final:
                    needed = min(result.result_end_time_s + RIGHT_CONTEXT_S, total_s)
                    k = min(len(sent_at) - 1, max(0, int(np.ceil(needed / CHUNK_S)) - 1))
                    stats.partial_latency_s.append(max(0.0, received - sent_at[k]))
                    stats.server_latency_s.append(response.processing_latency_ms / 1e3)
                elif len(sent_at) == len(chunks):
                    stats.final_latency_s.append(received - sent_at[-1])
    except grpc.RpcError as error:
        stats.errors.append(error.code().name)


def percentile(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1e3:.0f}" if values else "–"


def channels(address: str, count: int) -> list[aio.Channel]:
    """``count`` channels, each on its own TCP connection (gRPC would otherwise share one subchannel):
    like ``count`` separate clients, and what lets the kernel spread them over server workers."""
    return [aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(count)]


async def run_streams(
    server: ServerProcess, n: int, pcm: bytes, seed: int, method: str, connections: int
) -> list[object]:
    stats = StreamStats()
    rng = random.Random(seed)
    cpu_before, wall_before = server.cpu_seconds(), time.perf_counter()
    client_before = time.process_time()
    batches_before, items_before = server.batch_totals("step")
    opened = channels(server.address, connections)
    stubs = [pb_grpc.RecognizerStub(channel) for channel in opened]
    try:
        await asyncio.gather(
            *(one_stream(stubs[i % connections], pcm, rng.uniform(0, 1.0), stats, method) for i in range(n))
        )
    finally:
        for channel in opened:
            await channel.close()
    wall = time.perf_counter() - wall_before
    cpu_after = server.cpu_seconds()
    busy = {pid: (cpu_after[pid] - cpu_before.get(pid, 0.0)) / wall for pid in cpu_after}
    cpu = f"{sum(busy.values()):.2f}"
    busiest = [f"{v:.2f}" for v in sorted(busy.values(), reverse=True) if v >= 0.05]
    if len(busiest) > 1:  # the busy processes: how evenly the kernel spread the connections over the workers
        cpu += f" ({' + '.join(busiest)})"
    client_cpu = (time.process_time() - client_before) / wall
    batches, items = server.batch_totals("step")
    mean_batch = (items - items_before) / max(1.0, batches - batches_before)
    errors = f"{len(stats.errors)} ({', '.join(sorted(set(stats.errors)))})" if stats.errors else "0"
    return [
        n,
        percentile(stats.partial_latency_s, 50),
        percentile(stats.partial_latency_s, 99),
        percentile(stats.server_latency_s, 50),
        percentile(stats.server_latency_s, 99),
        percentile(stats.final_latency_s, 50),
        percentile(stats.final_latency_s, 99),
        f"{mean_batch:.1f}",
        cpu,
        f"{client_cpu:.2f}",
        errors,
    ]


async def run_throughput(
    server: ServerProcess, clients: int, audio: bytes, audio_s: float, seconds: float, method: str, connections: int
) -> dict:
    done: list[float] = []
    errors: list[str] = []
    request = pb.RecognizeRequest(config=pb.RecognitionConfig(search_method=method), audio=audio)
    opened = channels(server.address, connections)
    stubs = [pb_grpc.RecognizerStub(channel) for channel in opened]
    try:
        for stub in stubs:
            await stub.Recognize(request, timeout=60)  # warm-up (every worker, when there are several)
        batches_before, items_before = server.batch_totals("recognize")
        stop_at = time.perf_counter() + seconds

        async def client(stub: pb_grpc.RecognizerStub) -> None:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    await stub.Recognize(request, timeout=60)
                    done.append(time.perf_counter() - start)
                except grpc.RpcError as error:
                    errors.append(error.code().name)

        start = time.perf_counter()
        await asyncio.gather(*(client(stubs[i % connections]) for i in range(clients)))
        wall = time.perf_counter() - start
    finally:
        for channel in opened:
            await channel.close()
    batches, items = server.batch_totals("recognize")
    return {
        "mean_batch": (items - items_before) / max(1.0, batches - batches_before),
        "rps": len(done) / wall,
        "audio_x": len(done) * audio_s / wall,
        "p50_ms": statistics.median(done) * 1e3 if done else float("nan"),
        "errors": len(errors),
    }


def model_batch_gain(model: Path, waveform: np.ndarray, batch: int, threads: int) -> tuple[float, float]:
    """Per-utterance ms of ``transcribe_batch`` at batch 1 and at ``batch``, in this process (no server):
    the ceiling on what batching can buy for this model on this machine."""
    torch.set_num_threads(threads)
    recognizer = Recognizer.from_checkpoint(model, device="cpu")
    single = median_time(lambda: recognizer.transcribe_batch([waveform]), repeats=5)
    batched = median_time(lambda: recognizer.transcribe_batch([waveform] * batch), repeats=3) / batch
    return single * 1e3, batched * 1e3


STREAM_HEADERS = [
    "streams",
    "partial p50",
    "partial p99",
    "server p50",
    "server p99",
    "final p50",
    "final p99",
    "mean batch",
    "server CPU (cores)",
    "load generator CPU",
    "errors",
]


def model_stream_rows(model: Path, args: argparse.Namespace, pcm: bytes, method: str) -> list[list[object]]:
    """The stream-count rows for ``model`` on a server of its own (the same flags as the main model's)."""
    flags = ["--max-batch-size", "32", "--torch-threads", str(args.torch_threads), "--workers", str(args.workers)]
    server = ServerProcess(model, args.logs / f"bench_server_{model.stem}.log", *flags)
    try:
        return [
            asyncio.run(run_streams(server, n, pcm, seed=n, method=method, connections=args.connections))
            for n in args.streams
        ]
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "english.pt")
    p.add_argument(
        "--compare-model",
        type=Path,
        action="append",
        default=[],
        help="another model whose streams are measured in the same run, on its own server (repeatable)",
    )
    p.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64, 200])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--throughput-seconds", type=float, default=15.0)
    p.add_argument("--torch-threads", type=int, default=1, help="the server's model threads (its default)")
    p.add_argument("--repeats", type=int, default=1, help="each stream sends the ~7.5 s recording this many times")
    p.add_argument("--workers", type=int, default=1, help="server processes sharing the port (asr-server --workers)")
    p.add_argument("--connections", type=int, default=50, help="client TCP connections the streams/clients spread over")
    p.add_argument("--logs", type=Path, default=Path("/tmp"))
    p.add_argument("--method", choices=sorted(METHODS), default="default", help="search method every request asks for")
    p.add_argument("--section", default="server", help="BENCHMARKS.md section to write")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args(argv)
    method, throughput_s = METHODS[args.method], args.throughput_seconds
    for model in (args.model, *args.compare_model):
        if not model.is_file():
            print(f"model {model} not found; pass --model / --compare-model", file=sys.stderr)
            return 2
    load_average = os.getloadavg()[0]  # other work on the machine shares the cores with this run
    pcm = stream_audio(args.repeats)
    flac = sorted((SAMPLES / "librispeech").glob("*.flac"))[0]
    audio_s = len(load_audio(flac, RATE)) / RATE

    single_ms, batched_ms = model_batch_gain(args.model, load_audio(flac, RATE), args.clients, args.torch_threads)
    server = ServerProcess(
        args.model,
        args.logs / "bench_server_on.log",
        "--max-batch-size",
        "32",
        "--torch-threads",
        str(args.torch_threads),
        "--workers",
        str(args.workers),
    )
    try:
        stream_rows = [
            asyncio.run(run_streams(server, n, pcm, seed=n, method=method, connections=args.connections))
            for n in args.streams
        ]
        on = asyncio.run(
            run_throughput(server, args.clients, flac.read_bytes(), audio_s, throughput_s, method, args.connections)
        )
    finally:
        server.stop()
    server = ServerProcess(
        args.model,
        args.logs / "bench_server_off.log",
        "--max-batch-size",
        "1",
        "--torch-threads",
        str(args.torch_threads),
        "--workers",
        str(args.workers),
    )
    try:
        off = asyncio.run(
            run_throughput(server, args.clients, flac.read_bytes(), audio_s, throughput_s, method, args.connections)
        )
    finally:
        server.stop()
    compared = [
        [f"`{model}`", *row]
        for model in args.compare_model
        for row in model_stream_rows(model, args, pcm, method)
    ]

    body = "\n\n".join(
        [
            f"## Server (`benchmarks/bench_server.py --method {args.method} --workers {args.workers}`"
            f"{'' if args.model.name == 'english.pt' else f', `{args.model.name}`'})\n\n"
            f"`python -m benchmarks.bench_server --model {args.model} --method {args.method} --workers {args.workers} "
            f"--repeats {args.repeats} --connections {args.connections} --streams {' '.join(map(str, args.streams))}"
            f"{''.join(f' --compare-model {m}' for m in args.compare_model)}"
            f"{' --section ' + args.section if args.section != 'server' else ''}` — "
            f"{machine_line()}; model `{args.model.name}` "
            f"(search: {'its stored default' if args.method == 'default' else args.method}); "
            f"{args.workers} server worker process(es) (`--workers`) and the load generator share the machine's "
            f"{os.cpu_count()} cores over loopback; the load spreads over {args.connections} client connections "
            f"(1-minute load average {load_average:.1f} when the run started: other processes were using the "
            "cores too).",
            f"Concurrent real-time streams ({len(pcm) / 2 / RATE:.1f} s of speech each, 100 ms chunks paced in "
            "real time, interim results on, chunk 320 ms + right context 160 ms). Latencies in ms: partial = from "
            "sending the audio a partial needed (its end time + right context) to receiving it; server = the "
            "server's own processing latency; final = from the last chunk to the final result. CPU = cores busy in the "
            "server processes and in the load generator.",
            table(STREAM_HEADERS, stream_rows),
            *(
                [
                    "The same streams against the other models (`--compare-model`), each on its own server with the "
                    "same flags, in this run:",
                    table(["model", *STREAM_HEADERS], compared),
                ]
                if compared
                else []
            ),
            f"Recognize throughput, {args.clients} concurrent clients, {audio_s:.1f} s FLAC per request, "
            f"{args.throughput_seconds:g} s each, same run:",
            table(
                ["batcher", "requests/s", "audio s/s", "p50 latency ms", "mean batch", "errors"],
                [
                    [
                        name,
                        f"{r['rps']:.1f}",
                        f"{r['audio_x']:.1f}",
                        f"{r['p50_ms']:.0f}",
                        f"{r['mean_batch']:.1f}",
                        r["errors"],
                    ]
                    for name, r in (("on (max_batch_size 32)", on), ("off (max_batch_size 1)", off))
                ],
            ),
            f"Batcher speed-up: **{on['rps'] / max(off['rps'], 1e-9):.1f}×** (goal ≥ 4×). For reference, the model "
            f"alone (`transcribe_batch` in-process, no server) takes {single_ms:.1f} ms per utterance at batch 1 and "
            f"{batched_ms:.1f} ms at batch {args.clients} ({single_ms / batched_ms:.1f}× from batching the forward "
            "pass itself); the rest of the server's gain comes from amortising per-call overhead.",
        ]
    )
    print(body)
    if not args.no_write:
        update_section(args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
