"""``asr-client``: stream audio live, batch-transcribe files, and check a running ``asr-server``.

A thin shell over :class:`client.AsrClient` and :mod:`client.batch`: parse arguments, call the
library, format the output, and turn the outcome into one of the exit codes below.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from client.audio import chunk_pcm16, paced, read_pcm16
from client.batch import (
    BatchInputError,
    FileResult,
    Job,
    NoInputError,
    expand_inputs,
    plan_jobs,
    transcribe_jobs,
    write_atomically,
)
from client.client import AsrClient, RecognitionError, TlsConfig
from client.formats import FORMATTERS, to_dict
from client.types import RecognitionOptions, StreamingUpdate, StreamOptions

DEFAULT_SERVER = "localhost:50051"
SERVER_ENV, TOKEN_ENV = "ASR_SERVER", "ASR_TOKEN"

# Exit codes (BSD sysexits.h where one fits), from least to most severe for a batch's overall code.
EXIT_OK = 0
EXIT_INPUT_REFUSED = 65  # EX_DATAERR: the server refused an input (bad audio, over a limit) or it was unreadable
EXIT_NO_INPUT = 66  # EX_NOINPUT: a path or glob matched no file
EXIT_SERVER_ERROR = 70  # EX_SOFTWARE: the server failed (INTERNAL, UNKNOWN, UNIMPLEMENTED, ...)
EXIT_PERMISSION = 77  # EX_NOPERM: UNAUTHENTICATED or PERMISSION_DENIED (token, mTLS)
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: no connection, server going away, deadline exceeded, not SERVING
EXIT_USAGE = 64  # EX_USAGE: bad command line
EXIT_INTERRUPTED = 130  # Ctrl-C
_SEVERITY = [EXIT_OK, EXIT_INPUT_REFUSED, EXIT_SERVER_ERROR, EXIT_PERMISSION, EXIT_UNAVAILABLE]

EXIT_CODES_HELP = """exit codes:
  0   success
  64  usage error (bad arguments)
  65  an input was refused by the server (corrupt audio, over a limit) or could not be read
  66  a path or glob matched no file
  69  server unavailable: cannot connect, it went away, deadline exceeded, or health is not SERVING
  70  server error (INTERNAL and other unexpected status codes)
  77  not authorised (missing or wrong token, client certificate)
  130 interrupted
A batch that continues past failed files exits with the most severe code among them."""

_REFUSED = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "OUT_OF_RANGE", "FAILED_PRECONDITION", "UNREADABLE"}
_UNAVAILABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}
_PERMISSION = {"UNAUTHENTICATED", "PERMISSION_DENIED"}


class UsageError(Exception):
    pass


class _InputError(Exception):
    """A local input that cannot be read."""


def exit_code_for(code_name: str) -> int:
    """The exit code for a gRPC status code name (or ``UNREADABLE``)."""
    if code_name in _REFUSED:
        return EXIT_INPUT_REFUSED
    if code_name in _UNAVAILABLE:
        return EXIT_UNAVAILABLE
    if code_name in _PERMISSION:
        return EXIT_PERMISSION
    return EXIT_SERVER_ERROR


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _connection_args(p: argparse.ArgumentParser, defaults: bool) -> None:
    """Connection flags, accepted before and after the subcommand (only the top level sets defaults)."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    g = p.add_argument_group("connection")
    g.add_argument("--server", default=default(os.environ.get(SERVER_ENV, DEFAULT_SERVER)),
                   help=f"host:port; comma-separated for round-robin over several (env {SERVER_ENV}; "
                   f"default {DEFAULT_SERVER})")
    g.add_argument("--token", default=default(os.environ.get(TOKEN_ENV)), help=f"bearer token (env {TOKEN_ENV})")
    g.add_argument("--tls", action="store_true", default=default(False), help="TLS with the system's roots")
    g.add_argument("--ca-file", default=default(""), help="PEM roots for the server certificate (implies --tls)")
    g.add_argument("--cert-file", default=default(""), help="client certificate for mutual TLS (implies --tls)")
    g.add_argument("--key-file", default=default(""), help="client key for mutual TLS")
    g.add_argument("--server-name", default=default(""), help="name to check in the server certificate")
    g.add_argument("--timeout-s", type=float, default=default(60.0), help="deadline of each request (default 60)")
    g.add_argument("--max-attempts", type=int, default=default(4),
                   help="attempts per request while the server is UNAVAILABLE (exponential backoff; default 4)")


def _search_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("recognition")
    g.add_argument("--method", default="default",
                   choices=["default", "ctc_greedy", "ctc_prefix_beam", "attention_beam", "joint", "rescoring"])
    g.add_argument("--beam", type=int, default=0, help="beam size (0 = the server's default)")
    g.add_argument("--nbest", type=int, default=1, help="alternatives to return")
    g.add_argument("--hint", action="append", default=[], metavar="PHRASE[:BOOST]", help="phrase to favour")
    g.add_argument("--model", default="", help="model name (see `asr-client models`); default: the server's")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="asr-client", description=__doc__.splitlines()[0], epilog=EXIT_CODES_HELP,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    _connection_args(p, defaults=True)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("stream", help="stream a file, stdin PCM or the microphone; partials update live",
                       epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("file", nargs="?", help="audio file, or - for raw 16-bit mono PCM on stdin at --rate")
    s.add_argument("--mic", action="store_true", help="capture the microphone (needs the sounddevice package)")
    s.add_argument("--rate", type=int, default=16000, help="sample rate of stdin PCM or the microphone")
    s.add_argument("--realtime", action="store_true", help="send audio no faster than it plays (simulated live)")
    s.add_argument("--chunk-ms", type=int, default=100, help="audio per message (default 100)")
    s.add_argument("--no-partials", action="store_true", help="ask for finals only")
    s.add_argument("--endpoint-ms", type=int, default=0, help="silence that ends an utterance (0 = server default)")
    s.add_argument("--no-endpointing", action="store_true", help="one utterance: only the end of input finalises")
    s.add_argument("--json", action="store_true", help="one JSON object per update instead of text")
    _search_args(s)
    _connection_args(s, defaults=False)

    t = sub.add_parser("transcribe", help="transcribe files, folders and globs (resumable, concurrent)",
                       epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("inputs", nargs="+", metavar="PATH", help="audio files, folders (recursive) or quoted globs")
    t.add_argument("--out", type=Path, help="write one output per file here (kept subfolders); default: stdout")
    t.add_argument("--format", choices=sorted(FORMATTERS), default="json",
                   help="output format (default json; stdout gets JSON Lines, or 'path<TAB>text' for txt)")
    t.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    t.add_argument("--connections", type=int, default=0,
                   help="TCP connections the requests spread over (default: concurrency, at most 4); "
                   "a server with --workers N hands each connection to one worker")
    t.add_argument("--overwrite", action="store_true", help="redo files whose output already exists")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (it is off when stderr is no TTY)")
    _search_args(t)
    _connection_args(t, defaults=False)

    h = sub.add_parser("health", help="print the server's health status (exit 0 only when SERVING)")
    h.add_argument("--service", default="", help="service name (default: the whole server)")
    h.add_argument("--wait-s", type=float, default=0.0, help="poll up to this long for SERVING")
    _connection_args(h, defaults=False)

    m = sub.add_parser("models", help="list the server's models and limits")
    m.add_argument("--json", action="store_true")
    _connection_args(m, defaults=False)
    return p


def _client(args: argparse.Namespace) -> AsrClient:
    wants_tls = args.tls or args.ca_file or args.cert_file or args.server_name
    tls = TlsConfig(args.ca_file, args.cert_file, args.key_file, args.server_name) if wants_tls else None
    if bool(args.cert_file) != bool(args.key_file):
        raise UsageError("--cert-file and --key-file go together")
    targets = [t.strip() for t in args.server.split(",") if t.strip()]
    if not targets:
        raise UsageError("--server is empty")
    connections = getattr(args, "connections", 1) or min(getattr(args, "concurrency", 1), 4)
    return AsrClient(targets, token=args.token or None, tls=tls, timeout_s=args.timeout_s,
                     max_attempts=args.max_attempts, connections=connections)


def _recognition_options(args: argparse.Namespace) -> RecognitionOptions:
    hints = []
    for hint in args.hint:
        phrase, _, boost = hint.rpartition(":") if ":" in hint else (hint, "", "0")
        try:
            hints.append((phrase, float(boost)))
        except ValueError:
            raise UsageError(f"--hint {hint!r}: the boost after ':' must be a number") from None
    return RecognitionOptions(max_alternatives=args.nbest, method=args.method, beam_size=args.beam,
                              phrase_hints=tuple(hints), model=args.model)


# ----------------------------------------------------------------------------------------- stream


class LiveLine:
    """Partials overwrite one terminal line; finals get their own. Off a TTY, partials are plain lines."""

    def __init__(self, out: TextIO) -> None:
        self._out, self._tty, self._shown, self._last = out, out.isatty(), False, ""

    def update(self, update: StreamingUpdate) -> None:
        if update.is_final:
            self._clear()
            self._out.write(f"[{update.start_s:7.2f} - {update.end_s:7.2f}] {update.text}\n")
            self._last = ""
        elif update.text and update.text != self._last:
            self._last = update.text
            if self._tty:
                width = shutil.get_terminal_size().columns - 1  # a wrapped line cannot be overwritten
                line = f"... {update.text}"
                self._out.write("\r\x1b[K" + (line if len(line) <= width else "..." + line[-width + 3 :]))
                self._shown = True
            else:
                self._out.write(f"partial: {update.text}\n")
        self._out.flush()

    def _clear(self) -> None:
        if self._shown:
            self._out.write("\r\x1b[K")
            self._shown = False

    def close(self) -> None:
        self._clear()
        self._out.flush()


def _stdin_chunks(rate: int, chunk_ms: int) -> Iterator[bytes]:
    size = 2 * max(1, rate * chunk_ms // 1000)
    leftover = b""
    while chunk := sys.stdin.buffer.read(size):
        chunk, leftover = leftover + chunk, b""
        if len(chunk) % 2:  # a pipe may split a sample; keep whole samples per message
            chunk, leftover = chunk[:-1], chunk[-1:]
        if chunk:
            yield chunk


def _microphone_chunks(rate: int, chunk_ms: int) -> Iterator[bytes]:
    """16-bit mono capture until Ctrl-C, which ends the stream cleanly (so the last final arrives)."""
    try:
        import sounddevice  # optional: `pip install sounddevice` (needs PortAudio)
    except (ImportError, OSError) as error:
        raise UsageError(f"--mic needs the sounddevice package and PortAudio ({error})") from None
    captured: queue.Queue[bytes] = queue.Queue()
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        with sounddevice.RawInputStream(samplerate=rate, channels=1, dtype="int16",
                                        blocksize=rate * chunk_ms // 1000,
                                        callback=lambda data, *_: captured.put(bytes(data))):
            print("listening; Ctrl-C ends the stream", file=sys.stderr)
            while not stop.is_set():
                try:
                    yield captured.get(timeout=0.1)
                except queue.Empty:
                    continue
    finally:
        signal.signal(signal.SIGINT, previous)


def _stream_source(args: argparse.Namespace) -> tuple[Iterator[bytes], int]:
    if args.mic == bool(args.file):
        raise UsageError("stream needs exactly one of FILE, - (stdin) or --mic")
    if args.mic:
        return _microphone_chunks(args.rate, args.chunk_ms), args.rate
    if args.file == "-":
        chunks, rate = _stdin_chunks(args.rate, args.chunk_ms), args.rate
    else:
        try:
            pcm, rate = read_pcm16(args.file)
        except Exception as error:  # soundfile raises its own LibsndfileError for unreadable audio
            raise _InputError(f"{args.file}: cannot read audio ({error})") from None
        chunks = chunk_pcm16(pcm, rate, args.chunk_ms)
    return (paced(chunks, rate) if args.realtime else chunks), rate


def cmd_stream(args: argparse.Namespace) -> int:
    chunks, rate = _stream_source(args)
    options = StreamOptions(
        sample_rate_hz=rate,
        recognition=_recognition_options(args),
        interim_results=not args.no_partials,
        endpoint_silence_ms=args.endpoint_ms,
        endpointing=not args.no_endpointing,
    )
    live = LiveLine(sys.stdout)
    with _client(args) as client:
        try:
            for update in client.stream(chunks, options):
                if args.json:
                    record = {"final": update.is_final, "utterance": update.utterance_index,
                              "start_s": round(update.start_s, 3), "end_s": round(update.end_s, 3),
                              "stability": round(update.stability, 3), "latency_ms": round(update.latency_ms, 1),
                              "text": update.text}
                    print(json.dumps(record, ensure_ascii=False), flush=True)
                else:
                    live.update(update)
        finally:
            live.close()
    return EXIT_OK


# ------------------------------------------------------------------------------------- transcribe


class _Tally:
    def __init__(self) -> None:
        self.ok = self.failed = self.skipped = 0
        self.audio_s = 0.0
        self.exit = EXIT_OK
        self.start = time.perf_counter()

    def add(self, result: FileResult) -> None:
        if result.transcript is not None:
            self.ok += 1
            self.audio_s += result.transcript.duration_s
        else:
            self.failed += 1
            code = exit_code_for(result.error_code)
            self.exit = max(self.exit, code, key=_SEVERITY.index)

    def rate(self) -> str:
        wall_s = time.perf_counter() - self.start
        return f"{self.audio_s / 3600:.3f} h audio, {self.audio_s / max(wall_s, 1e-9):.1f}x real time"

    def speed(self) -> str:
        wall_s = time.perf_counter() - self.start
        real_time = self.audio_s / max(wall_s, 1e-9)
        return f"{self.audio_s / 3600:.3f} h audio in {wall_s:.1f} s ({real_time:.1f}x real time)"

    def summary(self, total: int) -> str:
        not_run = total - self.ok - self.failed - self.skipped
        counts = (f"{total} file{'' if total == 1 else 's'}: {self.ok} transcribed, "
                  f"{self.skipped} skipped (output exists), {self.failed} failed")
        return counts + (f", {not_run} not attempted" if not_run else "") + (f"; {self.speed()}" if self.ok else "")


def _emit(result: FileResult, fmt: str, say: Any) -> None:
    """Write the output file, or one stdout line; report a failure on stderr."""
    path = str(result.job.audio)
    if result.transcript is None:
        say(f"error: {path}: {result.error_code}: {result.error}")
        if result.job.output is None and fmt != "txt":
            record = {"path": path, "error": {"code": result.error_code, "message": result.error}}
            print(json.dumps(record, ensure_ascii=False), flush=True)
    elif result.job.output is not None:
        write_atomically(result.job.output, FORMATTERS[fmt](result.transcript))
    elif fmt == "txt":
        print(f"{path}\t{result.transcript.text}", flush=True)
    else:
        print(json.dumps({"path": path, **to_dict(result.transcript)}, ensure_ascii=False), flush=True)


def cmd_transcribe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.out is None and args.format in ("srt", "vtt"):
        raise UsageError(f"--format {args.format} writes one file per input: give --out DIR")
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if args.connections < 0:
        raise UsageError("--connections must be at least 1 (0 = automatic)")
    jobs = plan_jobs(expand_inputs(args.inputs), args.out, "." + args.format)
    todo: list[Job] = [j for j in jobs if args.overwrite or j.output is None or not j.output.exists()]
    tally = _Tally()
    tally.skipped = len(jobs) - len(todo)
    options = _recognition_options(args)
    bar = tqdm(total=len(todo), unit="file", disable=True if args.no_progress else None, file=sys.stderr,
               dynamic_ncols=True)
    try:
        with _client(args) as client:
            for result in transcribe_jobs(client, todo, options, concurrency=args.concurrency):
                tally.add(result)
                _emit(result, args.format, bar.write if not bar.disable else _stderr)
                bar.set_postfix_str(tally.rate(), refresh=False)
                bar.update()
    except KeyboardInterrupt:
        bar.close()
        _stderr(f"interrupted; {tally.summary(len(jobs))}; rerun to resume")
        return EXIT_INTERRUPTED
    bar.close()
    _stderr(tally.summary(len(jobs)))
    if tally.exit == EXIT_UNAVAILABLE:
        _stderr(f"stopped: the server at {args.server} is unavailable; rerun to resume")
    return tally.exit


# ---------------------------------------------------------------------------------- health, models


def cmd_health(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.wait_s
    with _client(args) as client:
        while True:
            try:
                status = client.health(args.service, timeout_s=min(args.timeout_s, 5.0))
            except RecognitionError as error:
                if time.monotonic() >= deadline:
                    raise
                status = error.code.name
            if status == "SERVING" or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
    print(status)
    return EXIT_OK if status == "SERVING" else EXIT_UNAVAILABLE


def cmd_models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        models = client.list_models()
    for m in models:
        if args.json:
            print(json.dumps(m.__dict__))
            continue
        print(f"{m.name}{' (default)' if m.is_default else ''}: {m.sample_rate_hz} Hz on {m.device}; "
              f"search {', '.join(m.search_methods)}; beam <= {m.max_beam_size}, "
              f"audio <= {m.max_audio_s:g} s, streams <= {m.max_concurrent_streams} of <= {m.max_stream_s:g} s")
    return EXIT_OK


def _stderr(message: str) -> None:
    print(f"asr-client: {message}", file=sys.stderr, flush=True)


# Errors found on this side of the wire, most specific first (NoInputError is a BatchInputError).
_LOCAL_ERRORS = (
    (UsageError, EXIT_USAGE),
    (NoInputError, EXIT_NO_INPUT),
    (BatchInputError, EXIT_USAGE),
    (_InputError, EXIT_INPUT_REFUSED),
)

COMMANDS = {"stream": cmd_stream, "transcribe": cmd_transcribe, "health": cmd_health, "models": cmd_models}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, BatchInputError, _InputError) as error:
        _stderr(f"error: {error}")
        return next(code for kind, code in _LOCAL_ERRORS if isinstance(error, kind))
    except RecognitionError as error:
        _stderr(f"error: {error} (server {args.server})")
        return exit_code_for(error.code.name)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `asr-client ... | head`
        sys.stderr.close()
        return EXIT_OK
