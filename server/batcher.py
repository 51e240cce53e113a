"""Dynamic batching: one worker thread owns the model and merges concurrent work into forward passes.

Recognize requests with identical search settings run as one :meth:`Recognizer.transcribe_batch`;
stream chunk steps run as one :func:`asr.streaming.step_batch`, stream ends as one
:func:`asr.streaming.finish_batch`. The worker takes the first queued
item, waits up to ``max_batch_delay_ms`` for up to ``max_batch_size`` items, groups them and runs
each group. The model never runs on the event loop, and only this thread touches it, so the
GPU (or the CPU threads) see one stream of large batches instead of contending small ones.
Results travel back as :class:`concurrent.futures.Future`, which asyncio awaits through
:func:`asyncio.wrap_future`; cancelling the awaiting task (a client deadline) cancels the future,
and the worker skips cancelled items.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import soundfile as sf

from asr.audio import load_audio
from asr.config import SearchConfig
from asr.errors import AsrError, LimitExceeded
from asr.inference import Recognizer, Transcript
from asr.streaming import StreamingOptions, StreamingResult, StreamingSession, finish_batch, step_batch
from server.metrics import ServerMetrics

logger = logging.getLogger(__name__)

Kind = Literal["recognize", "step", "finish"]


@dataclass
class _Item:
    kind: Kind
    future: Future[Any]
    waveform: np.ndarray | None = None  # recognize: float32 (N,) at the model rate
    search: SearchConfig | None = None  # recognize: the request's settings (None = model default)
    session: StreamingSession | None = None  # step / finish
    group: tuple[Any, ...] = field(default=())  # items with equal keys share a forward pass


class DynamicBatcher:
    """Bounded queue + one model thread; ``submit_*`` are safe to call from any thread."""

    def __init__(
        self,
        recognizer: Recognizer,
        *,
        max_batch_size: int,
        max_batch_delay_ms: float,
        max_queue_size: int,
        metrics: ServerMetrics,
        stream_batch_delay_ms: float | None = None,
    ) -> None:
        self._recognizer = recognizer
        self._max_batch_size = max_batch_size
        delay_s = max_batch_delay_ms / 1000.0
        stream_delay_s = delay_s if stream_batch_delay_ms is None else stream_batch_delay_ms / 1000.0
        self._delay_s: dict[Kind, float] = {"recognize": delay_s, "step": stream_delay_s, "finish": stream_delay_s}
        # Open streams, kept by the servicer: once every one of them has a step queued, no more can come
        # (0 = not counted: wait the full delay).
        self.open_streams = 0
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queue_size)
        self._metrics = metrics
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="asr-batcher", daemon=True)
        self._thread.start()

    def submit_recognize(self, waveform: np.ndarray, search: SearchConfig | None) -> Future[Transcript]:
        """Queue one utterance (float32 (N,) at the model rate) for a batched transcribe."""
        return self._put(_Item("recognize", Future(), waveform=waveform, search=search, group=("r", search)))

    def submit_step(self, session: StreamingSession) -> Future[list[StreamingResult]]:
        """Queue one chunk step of a ready session; resolves to that session's new results."""
        return self._put(_Item("step", Future(), session=session, group=("s",)))

    def submit_finish(self, session: StreamingSession) -> Future[list[StreamingResult]]:
        """Queue the end-of-stream flush of a session (it runs the model too, so on this thread)."""
        return self._put(_Item("finish", Future(), session=session, group=("f",)))

    def close(self, timeout_s: float | None = None) -> None:
        """Stop after the queued work is done (already-queued futures still resolve)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _put(self, item: _Item) -> Future[Any]:
        if self._closed:
            raise LimitExceeded("the server is shutting down; retry on another replica")
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise LimitExceeded(
                f"the server is at capacity ({self._queue.maxsize} forward passes queued); retry with backoff"
            ) from None
        self._metrics.queue_depth.set(self._queue.qsize())
        return item.future

    def _run(self) -> None:
        running = True
        while running:
            items, running = self._collect()
            self._process(items)
            # No local may keep the last batch while the queue is idle: a cancelled stream's session
            # (and a request's waveform) must be freed when its call ends, not when the next one comes.
            del items

    def _collect(self) -> tuple[list[_Item], bool]:
        """The next batch and whether to keep running.

        Each item waits at most its kind's delay for company. Stream items may wait longer than
        Recognize requests: a step costs ~7 ms alone but ~1.4 ms per stream in a batch of 16 or more
        (BENCHMARKS.md, "Streaming"), and staggered streams become ready a few ms apart, so a short
        wait buys most of the server's streaming capacity. When every open stream is already in the
        batch nothing else can come, so a lone stream never waits.
        """
        first = self._queue.get()
        if first is None:
            return [], False
        items = [first]
        deadline = time.monotonic() + self._delay_s[first.kind]
        streams = int(first.kind != "recognize")
        while len(items) < self._max_batch_size and not (0 < self.open_streams <= streams == len(items)):
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                return items, False
            items.append(item)
            streams += item.kind != "recognize"
            deadline = min(deadline, time.monotonic() + self._delay_s[item.kind])
        self._metrics.queue_depth.set(self._queue.qsize())
        return items, True

    def _process(self, items: Sequence[_Item]) -> None:
        groups: dict[tuple[Any, ...], list[_Item]] = defaultdict(list)
        for item in items:
            if item.future.set_running_or_notify_cancel():  # False: the caller gave up (deadline, cancel)
                groups[item.group].append(item)
        for group in groups.values():
            kind = group[0].kind
            self._metrics.batch_size.labels(kind).observe(len(group))
            if kind == "recognize":
                self._run_group(group, self._recognize, isolate=True)
            elif kind == "step":
                self._run_group(group, self._step, isolate=False)
            else:
                self._run_group(group, self._finish, isolate=False)

    def _recognize(self, group: Sequence[_Item]) -> list[Any]:
        waveforms = [item.waveform for item in group]
        return list(self._recognizer.transcribe_batch(waveforms, group[0].search))  # type: ignore[arg-type]

    def _step(self, group: Sequence[_Item]) -> list[Any]:
        return list(step_batch([item.session for item in group]))  # type: ignore[misc]

    def _finish(self, group: Sequence[_Item]) -> list[Any]:
        return list(finish_batch([item.session for item in group]))  # type: ignore[misc]

    def _run_group(self, group: Sequence[_Item], run: Callable[[Sequence[_Item]], list[Any]], *, isolate: bool) -> None:
        """Run ``group`` as one batch and resolve its futures.

        With ``isolate``, a failed batch is retried one by one so each caller gets its own error: a
        bad boost phrase in one request must not fail the 31 good requests batched with it. Stream
        steps are not retried, because a failed step may already have advanced some sessions.
        """
        try:
            results = run(group)
        except Exception as exc:
            if isolate and len(group) > 1:
                for item in group:
                    self._run_group([item], run, isolate=False)
                return
            if not isinstance(exc, AsrError):
                logger.exception("model call failed (%s batch of %d)", group[0].kind, len(group))
            for item in group:
                item.future.set_exception(exc)
            return
        for item, result in zip(group, results):
            item.future.set_result(result)


def warm_up(recognizer: Recognizer, options: StreamingOptions, max_batch_size: int) -> None:
    """Decode a WAV file, then run stream steps, stream ends and Recognize batches once, up to the largest batch.

    Called before the server reports SERVING: the first large batches otherwise pay for growing
    the heap and for building kernels for new shapes, and the first burst of clients would see it
    as latency (the first 200-stream run after a start had several times the p99 of the next).
    The WAV is at 8 kHz because the first resampling imports the resampler (2-4 s on these
    machines): without it the first request of another rate paid for that.
    """
    noise = (0.01 * np.random.default_rng(0).standard_normal(recognizer.sample_rate)).astype(np.float32)
    wav = io.BytesIO()
    sf.write(wav, noise[: len(noise) // 2], recognizer.sample_rate // 2, format="WAV", subtype="PCM_16")
    load_audio(wav.getvalue(), recognizer.sample_rate)
    for size in sorted({1, max(1, max_batch_size // 4), max_batch_size}):
        sessions = [recognizer.open_stream(options) for _ in range(size)]
        for session in sessions:
            session.push(noise)
        step_batch(sessions)
        finish_batch(sessions)
        recognizer.transcribe_batch([noise] * size)
