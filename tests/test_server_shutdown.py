"""SIGTERM to a real `asr-server` process mid-stream: health goes NOT_SERVING, new calls are refused,
the open stream still gets its final result, and the process exits cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from client import AsrClient, RecognitionError, StreamOptions
from client.audio import chunk_pcm16, read_pcm16

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server_process(tiny_model_path: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str, Path]]:
    port = free_port()
    command = [sys.executable, "-m", "server", "--model", str(tiny_model_path), "--host", "127.0.0.1",
               "--port", str(port), "--metrics-port", "-1", "--device", "cpu", "--torch-threads", "1",
               "--drain-s", "1.0", "--grace-period-s", "20"]
    env = {**os.environ, "ASR_SERVER_LOG_FORMAT": "json"}
    log = tmp_path / "server.log"
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=log.open("w"))
    address = f"127.0.0.1:{port}"
    with AsrClient(address, timeout_s=1, max_attempts=1) as probe:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if probe.health() == "SERVING":
                    break
            except RecognitionError:
                time.sleep(0.2)
    assert process.poll() is None, log.read_text()
    yield process, address, log
    if process.poll() is None:
        process.kill()
    process.wait()


def test_sigterm_mid_stream_lets_the_stream_finish(server_process, samples):
    process, address, log = server_process
    path = sorted(zip(samples.durations, samples.paths))[-1][1]  # the longest known sample
    pcm, rate = read_pcm16(path)
    chunks = list(chunk_pcm16(pcm, rate, 100))
    options = StreamOptions(sample_rate_hz=rate)
    seen: list[str] = []

    with AsrClient(address, timeout_s=5, max_attempts=1) as client:
        reference = [u.text for u in client.stream(chunks, options) if u.is_final]

        def chunks_with_sigterm() -> Iterator[bytes]:
            yield from chunks[: len(chunks) // 2]
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while "NOT_SERVING" not in seen and time.monotonic() < deadline:
                seen.append(client.health())
                time.sleep(0.05)
            time.sleep(1.5)  # past the drain period: the server now refuses new calls
            with AsrClient(address, timeout_s=2, max_attempts=1) as newcomer:
                try:
                    newcomer.transcribe(path)
                    seen.append("accepted")
                except RecognitionError as error:
                    seen.append(error.code.name)
            yield from chunks[len(chunks) // 2 :]

        finals = [u.text for u in client.stream(chunks_with_sigterm(), options) if u.is_final]

    assert finals == reference and finals
    assert "NOT_SERVING" in seen and seen[-1] == grpc.StatusCode.UNAVAILABLE.name
    assert process.wait(timeout=30) == 0
    logs = log.read_text()
    assert '"request_id"' in logs and "stopped" in logs
