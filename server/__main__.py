"""``asr-server --model M [--config server.yaml]``: load the model, serve, shut down gracefully.

Settings precedence (lowest to highest): ServerConfig defaults < ``--config`` YAML <
``ASR_SERVER_*`` environment variables < flags. On SIGTERM or SIGINT: health turns NOT_SERVING,
new calls are refused, in-flight calls get ``grace_period_s`` to finish, then the batcher drains.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from asr.errors import AsrError, ConfigError
from asr.inference import Recognizer
from server.app import build_server
from server.config import ServerConfig, load_server_config
from server.interceptors import RequestIdFilter
from server.workers import serve_workers

logger = logging.getLogger("server")

_STANDARD_RECORD_KEYS = set(logging.makeLogRecord({}).__dict__) | {"message", "request_id"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD_RECORD_KEYS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    text_format = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text_format))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def parse_args(argv: Sequence[str] | None) -> tuple[str | None, dict[str, Any]]:
    """(YAML path, flag values); flags left out are None, so lower layers keep their values."""
    p = argparse.ArgumentParser(prog="asr-server", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="server YAML (keys are ServerConfig fields)")
    p.add_argument("--model", help=f"checkpoint to serve (default {ServerConfig.model})")
    p.add_argument("--model-name", help="name clients use in RecognitionConfig.model (default: file stem)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--device", help="auto, cpu or cuda[:N]")
    p.add_argument("--torch-threads", type=int, help="model intra-op threads (default 1; 0 = one per core)")
    p.add_argument("--workers", type=int, help="server processes sharing the port (default 1); one per core")
    p.add_argument("--max-batch-size", type=int, help="1 turns the batcher off")
    p.add_argument("--max-batch-delay-ms", type=float)
    p.add_argument("--stream-batch-delay-ms", type=float)
    p.add_argument("--max-concurrent-streams", type=int)
    p.add_argument("--metrics-port", type=int, help="-1 turns the Prometheus exporter off")
    p.add_argument("--web-port", type=int, help="serve the live-captions page and WebSocket API here (default off)")
    p.add_argument("--tokens-file", help="bearer tokens, one per line")
    p.add_argument("--tls-cert-file")
    p.add_argument("--tls-key-file")
    p.add_argument("--tls-client-ca-file", help="require client certificates signed by this CA (mTLS)")
    p.add_argument("--drain-s", type=float, help="SIGTERM: seconds of NOT_SERVING before refusing calls")
    p.add_argument("--grace-period-s", type=float, help="SIGTERM: seconds in-flight calls get to finish")
    p.add_argument("--log-level")
    p.add_argument("--log-format", choices=["json", "text"])
    args = vars(p.parse_args(argv))
    return args.pop("config"), args


async def serve(cfg: ServerConfig, recognizer: Recognizer) -> None:
    """Serve until SIGTERM/SIGINT, then shut down in the order operators expect."""
    running = await build_server(cfg, recognizer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down: NOT_SERVING for %g s, then %g s for in-flight calls", cfg.drain_s, cfg.grace_period_s)
    await running.stop(cfg.grace_period_s, cfg.drain_s)
    logger.info("stopped")


def run_one_server(cfg: ServerConfig) -> None:
    """Load the model and serve in this process: the whole server, or one of ``--workers``."""
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    recognizer = Recognizer.from_checkpoint(cfg.model, device=cfg.device)
    asyncio.run(serve(cfg, recognizer))


def main(argv: Sequence[str] | None = None) -> int:
    config_path, flags = parse_args(argv)
    try:
        cfg = load_server_config(config_path, flags)
        configure_logging(cfg.log_level, cfg.log_format)
        if cfg.workers > 1:
            if not Path(cfg.model).is_file():
                raise ConfigError(f"model {cfg.model} does not exist")
            return serve_workers(cfg)
        run_one_server(cfg)
    except AsrError as exc:
        print(f"asr-server: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
