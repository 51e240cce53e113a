"""Batch transcription of many files: inputs → output paths, resume, bounded concurrency, per-file errors.

What makes a batch survivable: each output is written atomically (a killed run never leaves a
half-written file that a rerun would skip), outputs that already exist are skipped, a file the
server refuses is reported and the batch moves on, and only errors that would fail every later
file too (the server is gone, the token is wrong) stop new submissions.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from client.client import AsrClient, RecognitionError
from client.types import RecognitionOptions, Transcript

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")  # what the server's decoder reads
UNREADABLE = "UNREADABLE"  # error code of a local file that could not be read
# Errors that every later file would hit too: stop submitting instead of failing them one by one.
FATAL_CODES = frozenset({"UNAVAILABLE", "UNAUTHENTICATED", "PERMISSION_DENIED"})


class BatchInputError(Exception):
    """Two inputs that would write the same output."""


class NoInputError(BatchInputError):
    """An input that matched no file."""


@dataclass(frozen=True)
class Job:
    audio: Path
    output: Path | None  # None: the result goes to stdout


@dataclass(frozen=True)
class FileResult:
    job: Job
    transcript: Transcript | None = None
    error_code: str = ""  # a gRPC status code name, or UNREADABLE
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.transcript is not None


def expand_inputs(specs: Sequence[str]) -> list[tuple[Path, Path]]:
    """(audio file, name relative to its input) for each file, directory (recursive) or glob.

    Directories contribute their audio files (by suffix) and keep their subfolders in the
    relative name, so ``speech_commands/yes/a.wav`` and ``speech_commands/no/a.wav`` stay apart.
    A file named explicitly is taken whatever its suffix. The same file twice is kept once.
    """
    found: dict[Path, tuple[Path, Path]] = {}  # resolved path -> (path as given, relative name)
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            pairs = [(p, p.relative_to(path)) for p in files]
        elif path.is_file():
            pairs = [(path, Path(path.name))]
        else:
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            pairs = [(p, Path(p.name)) for p in matches if p.is_file()]
        if not pairs:
            raise NoInputError(f"{spec}: no such file, or no audio files ({', '.join(AUDIO_SUFFIXES)}) in it")
        for audio, relative in pairs:
            found.setdefault(audio.resolve(), (audio, relative))
    return list(found.values())


def plan_jobs(inputs: Sequence[tuple[Path, Path]], out_dir: Path | None, suffix: str) -> list[Job]:
    """One job per input; with ``out_dir``, the output is ``out_dir/relative.suffix``."""
    if out_dir is None:
        return [Job(audio, None) for audio, _ in inputs]
    jobs = [Job(audio, out_dir / relative.with_suffix(suffix)) for audio, relative in inputs]
    seen: dict[Path, Path] = {}
    for job in jobs:
        assert job.output is not None
        if job.output in seen:
            raise BatchInputError(f"{seen[job.output]} and {job.audio} would both write {job.output}")
        seen[job.output] = job.audio
    return jobs


def write_atomically(path: Path, text: str) -> None:
    """Write via a temporary sibling and rename, so ``path`` is either absent or complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _transcribe_one(client: AsrClient, job: Job, options: RecognitionOptions | None) -> FileResult:
    try:
        return FileResult(job, client.transcribe(job.audio, options))
    except RecognitionError as error:
        detail = error.message + (f" (request id {error.request_id})" if error.request_id else "")
        return FileResult(job, error_code=error.code.name, error=detail)
    except OSError as error:
        return FileResult(job, error_code=UNREADABLE, error=str(error))


def transcribe_jobs(
    client: AsrClient, jobs: Iterable[Job], options: RecognitionOptions | None = None, *, concurrency: int = 8
) -> Iterator[FileResult]:
    """Results in completion order, at most ``concurrency`` requests in flight (the server batches them).

    After a result whose code is in :data:`FATAL_CODES`, nothing new is submitted: the requests
    already in flight finish, and the jobs never started are not reported.
    """
    todo = iter(jobs)
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="asr-client")
    in_flight: set[Future[FileResult]] = set()

    def submit_next() -> None:
        job = next(todo, None)
        if job is not None:
            in_flight.add(pool.submit(_transcribe_one, client, job, options))

    try:
        for _ in range(max(1, concurrency)):
            submit_next()
        stopping = False
        while in_flight:
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                in_flight.discard(future)
                result = future.result()
                stopping = stopping or result.error_code in FATAL_CODES
                if not stopping:
                    submit_next()
                yield result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
