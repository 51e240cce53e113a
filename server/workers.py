"""``workers > 1``: several server processes share one port, so the model runs on every core.

One Python process is held to about one core by the GIL: its event loop and its batcher thread take
turns, whatever ``torch_threads`` says (measured in BENCHMARKS.md, "Server"). gRPC's own advice for
Python is one process per core on one port with ``SO_REUSEPORT``, which gRPC sets on its listening
sockets by default on Linux: the kernel then spreads *connections* over the processes. Each worker
is a complete server (model, batcher, health, limits), so nothing is shared that could fail for all.
A single client connection always lands on one worker; many clients (or a client that opens several
channels) spread out.

This process only supervises: it starts the workers, serves their merged Prometheus metrics
(prometheus-client's multiprocess mode, one directory of memory-mapped files the workers write),
restarts a worker that dies unexpectedly, forwards SIGTERM/SIGINT so each worker shuts down
gracefully, and gives up (exit 1) when a worker dies within ``worker_min_uptime_s`` of starting — a
bad model file or a port in use should stop the service, not spin.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from dataclasses import replace
from multiprocessing.process import BaseProcess
from types import FrameType
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from server.config import ServerConfig

logger = logging.getLogger("server.workers")

_POLL_S = 0.5


def _worker_main(cfg: ServerConfig) -> None:
    """Entry point of one worker process (spawned, so it imports torch and the model afresh)."""
    from server.__main__ import configure_logging, run_one_server

    configure_logging(cfg.log_level, cfg.log_format)
    run_one_server(cfg)


class WorkerPool:
    """Start, watch and stop ``cfg.workers`` server processes on ``cfg.port``."""

    def __init__(self, cfg: ServerConfig, metrics_dir: str) -> None:
        # Workers record metrics into files only; this process exports the merged view.
        self._worker_cfg = replace(cfg, workers=1, metrics_port=-1)
        self._cfg = cfg
        self._metrics_dir = metrics_dir
        self._context = multiprocessing.get_context("spawn")
        self._procs: list[BaseProcess] = []
        self._started_at: list[float] = []
        self._stopping = threading.Event()
        self._stopped = False

    def start(self) -> None:
        for _ in range(self._cfg.workers):
            self._procs.append(self._spawn())
            self._started_at.append(time.monotonic())

    def _spawn(self) -> BaseProcess:
        process = self._context.Process(target=_worker_main, args=(self._worker_cfg,), name="asr-server-worker")
        process.start()
        logger.info("worker %d started", process.pid)
        return process

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def watch(self) -> int:
        """Block until stopped (exit code 0) or until a worker crash-loops (exit code 1)."""
        while not self._stopping.wait(_POLL_S):
            for index, process in enumerate(self._procs):
                if process.is_alive() or self._stopping.is_set():
                    continue
                if process.pid is not None:
                    multiprocess.mark_process_dead(process.pid, self._metrics_dir)
                lived = time.monotonic() - self._started_at[index]
                if lived < self._cfg.worker_min_uptime_s:
                    logger.error(
                        "worker %d exited with code %s after %.1f s; stopping the server",
                        process.pid,
                        process.exitcode,
                        lived,
                    )
                    return 1
                logger.error("worker %d exited with code %s; starting a new one", process.pid, process.exitcode)
                self._procs[index] = self._spawn()
                self._started_at[index] = time.monotonic()
        return 0

    def request_stop(self) -> None:
        """Make :meth:`watch` return (safe from a signal handler)."""
        self._stopping.set()

    def stop(self) -> None:
        """SIGTERM every worker (each drains and finishes in-flight calls), then wait; kill stragglers."""
        self._stopping.set()
        if self._stopped:
            return
        self._stopped = True
        for process in self._procs:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._cfg.drain_s + self._cfg.grace_period_s + 10.0
        for process in self._procs:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.error("worker %d did not stop in time; killing it", process.pid)
                process.kill()
                process.join()


def serve_workers(cfg: ServerConfig) -> int:
    """Run ``cfg.workers`` worker processes until SIGTERM/SIGINT; returns the exit code."""
    with tempfile.TemporaryDirectory(prefix="asr-metrics-") as metrics_dir:
        # Read by prometheus-client when each (spawned) worker imports it.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        pool = WorkerPool(cfg, metrics_dir)
        http = _serve_merged_metrics(cfg, metrics_dir) if cfg.metrics_port >= 0 else None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("signal %d: stopping %d workers", signum, cfg.workers)
            pool.request_stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        pool.start()
        logger.info("serving on port %d with %d workers (pids %s)", cfg.port, cfg.workers, pool.pids)
        code = pool.watch()
        pool.stop()
        if http is not None:
            http.shutdown()
            http.server_close()
        logger.info("stopped")
        return code


def _serve_merged_metrics(cfg: ServerConfig, metrics_dir: str) -> WSGIServer:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=metrics_dir)
    http, _ = start_http_server(cfg.metrics_port, addr=cfg.metrics_host, registry=registry)
    return http
