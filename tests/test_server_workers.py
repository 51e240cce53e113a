"""`asr-server --workers 2`: two real processes on one port, merged metrics, a dead worker replaced,
a crash loop stopped, and SIGTERM stopping everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from asr.inference import Recognizer
from client import AsrClient, RecognitionError
from protos import asr_service_pb2 as pb
from protos import asr_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT workers: Linux")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_pids(parent: int) -> list[int]:
    """Live server workers of ``parent`` (its spawned children, not multiprocessing's resource tracker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z" and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def start(model: Path, port: int, metrics_port: int, log: Path, min_uptime_s: float) -> subprocess.Popen:
    command = [sys.executable, "-m", "server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", str(metrics_port), "--device", "cpu", "--workers", "2", "--grace-period-s", "5",
               "--log-format", "text"]
    env = {**os.environ, "ASR_SERVER_WORKER_MIN_UPTIME_S": str(min_uptime_s)}
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=log.open("w"))


def serving(address: str) -> bool:
    with AsrClient(address, timeout_s=1, max_attempts=1) as probe:
        try:
            return probe.health() == "SERVING"
        except RecognitionError:
            return False


def recognize_ok_total(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "asr_requests_total" and sample.labels == {"method": "Recognize", "code": "OK"}
    )


@pytest.fixture
def workers(tiny_model_path: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str, int, Path]]:
    port, metrics_port = free_port(), free_port()
    log = tmp_path / "server.log"
    process = start(tiny_model_path, port, metrics_port, log, min_uptime_s=1.0)
    address = f"127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is not None or len(worker_pids(process.pid)) == 2, 30, "two workers")
        wait_for(lambda: process.poll() is not None or serving(address), 60, "SERVING")
        assert process.poll() is None, log.read_text()
        yield process, address, metrics_port, log
    finally:
        if process.poll() is None:
            process.kill()
            for pid in worker_pids(process.pid):
                os.kill(pid, signal.SIGKILL)
        process.wait()


def recognize_on_new_connection(address: str, audio: bytes) -> str:
    # A channel of its own TCP connection: the kernel picks a worker per connection.
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        response = pb_grpc.RecognizerStub(channel).Recognize(pb.RecognizeRequest(audio=audio), timeout=30)
    return response.results[0].alternatives[0].transcript if response.results else ""


def test_workers_share_the_port_merge_metrics_replace_a_dead_worker_and_stop_on_sigterm(
    workers, tiny_model_path, samples
):
    process, address, metrics_port, log = workers
    path = sorted(zip(samples.durations, samples.paths))[0][1]
    expected = Recognizer.from_checkpoint(tiny_model_path, device="cpu").transcribe_files([path])[0].text
    audio = Path(path).read_bytes()

    assert [recognize_on_new_connection(address, audio) for _ in range(6)] == [expected] * 6
    assert recognize_ok_total(metrics_port) == 6  # counted by whichever worker served, summed by the supervisor

    victim = worker_pids(process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in worker_pids(process.pid) and len(worker_pids(process.pid)) == 2, 30, "a new worker")
    wait_for(lambda: serving(address), 60, "SERVING after the restart")
    assert [recognize_on_new_connection(address, audio) for _ in range(4)] == [expected] * 4
    assert process.poll() is None

    survivors = worker_pids(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, log.read_text()
    assert not any(Path(f"/proc/{pid}").exists() for pid in survivors)  # stopped and reaped
    assert "starting a new one" in log.read_text()


def test_a_worker_that_cannot_start_stops_the_server_instead_of_looping(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    log = tmp_path / "server.log"
    process = start(broken, free_port(), -1, log, min_uptime_s=60.0)
    try:
        assert process.wait(60) == 1
    finally:
        if process.poll() is None:
            process.kill()
    assert "stopping the server" in log.read_text()
    assert not worker_pids(process.pid)
