"""Streaming recognition: PCM chunks in, partial and final transcripts out, utterance after utterance.

The encoder is a latency-controlled BiLSTM (Zhang et al. 2016): the forward direction carries
its state from chunk to chunk, the backward direction sees each chunk plus ``right_context_ms``
of look-ahead (:meth:`RNNEncoder.forward_chunk`). Features are computed exactly as offline: a
session keeps the waveform from the start of the next frame's window, turns whole frames into
log-mels, applies the global CMVN and feeds the encoder whole chunks (multiples of the
subsampling factor). The CTC posteriors of each chunk advance the same search object offline
decoding uses (E4); partials come from its current n-best, finals from ``finalize`` (optionally
attention-rescored, two-pass). An utterance ends when the best path has been blank for
``endpoint_silence_ms``; the encoder and search then restart, so hours of audio keep memory flat.

Times are seconds from the start of the stream. :func:`step_batch` advances many sessions with
one encoder forward (states stacked and split), and :func:`finish_batch` ends many at once; the
server's batcher calls both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from asr.config import SearchConfig
from asr.decoding.boosting import PhraseBooster
from asr.decoding.ctc_greedy import collapse_best_path
from asr.decoding.ctc_prefix_beam import CTCPrefixBeamSearch
from asr.decoding.hypothesis import NBest
from asr.decoding.rescoring import attention_rescore
from asr.decoding.timestamps import word_timings
from asr.errors import AudioError, ConfigError
from asr.inference import Alternative, Recognizer, Transcript, Word
from asr.models.encoder import EncoderChunkState
from asr.stream_features import compute, open_feature_stream

STREAMABLE_METHODS = ("ctc_greedy", "ctc_prefix_beam")  # frame-synchronous searches can emit partials


@dataclass(frozen=True)
class StreamingOptions:
    chunk_ms: int = 320  # encoder chunk (multiple of hop × subsampling); algorithmic latency = chunk + right context
    right_context_ms: int = 160  # look-ahead of the backward direction (LC-BLSTM)
    interim_results: bool = True  # emit partials
    endpoint_silence_ms: int = 800  # trailing blank that ends an utterance (0 = never; only finish() finalises)
    # The trailing audio must be quiet for as long too: loudness (mean normalised log-mel per frame)
    # below floor + ratio × (peak − floor), the stream's quietest and loudest frames. CTC emits labels
    # in bursts with blank runs inside words, so blanks alone cut words in two; 0 = blanks alone.
    endpoint_quiet_ratio: float = 0.3
    max_utterance_s: float = 30.0  # force a final after this much audio in one utterance (bounds memory)
    # Front ends without an incremental form (Whisper encoder) re-encode the utterance so far with
    # each chunk, at most this much of it (asr.stream_features.WindowStream); log-mel ignores it.
    left_context_ms: int = 30000
    rescore: bool = False  # attention rescoring of the final (two-pass), when the model has a decoder
    search: SearchConfig | None = None  # None: the recognizer's default; ctc_greedy or ctc_prefix_beam


@dataclass(frozen=True)
class StreamingResult:
    transcript: Transcript  # words carry stream times
    is_final: bool
    stability: float  # [0, 1]: estimated probability the partial will not change (1.0 for finals)
    start_s: float  # utterance start (stream time)
    end_s: float  # audio processed so far in this utterance
    utterance_index: int  # 0, 1, 2 ... utterances in this stream


class _UtteranceSearch:
    """The current utterance's CTC search behind one ``accept / partial / final`` surface.

    Prefix beam keeps its whole beam (``nbest = beam_size``): the beam's spread gives the
    partial's stability and rescoring needs the n-best. Greedy keeps the utterance's per-frame
    best labels and their log-probs (bounded by ``max_utterance_s``) and collapses them again for
    each result, so it equals offline greedy exactly without touching old posteriors.
    """

    def __init__(self, cfg: SearchConfig, recognizer: Recognizer) -> None:
        self.cfg = cfg
        self._beam: CTCPrefixBeamSearch | None = None
        if cfg.method == "ctc_prefix_beam":
            boost = recognizer.boost_ids(cfg)
            self._beam = CTCPrefixBeamSearch(
                replace(cfg, nbest=max(cfg.beam_size, cfg.nbest)),
                pieces=recognizer.pieces,
                lm=recognizer.lm(cfg.lm_path) if cfg.lm_weight != 0.0 else None,
                boost=PhraseBooster(boost) if boost else None,
            )
        self._best_ids: list[np.ndarray] = []
        self._best_values: list[np.ndarray] = []

    def reset(self) -> None:
        if self._beam is not None:
            self._beam.reset()
        self._best_ids, self._best_values = [], []

    def accept(self, log_probs: Tensor, best_values: np.ndarray, best_ids: np.ndarray) -> None:
        """Advance over ``log_probs (T', V)`` of one chunk; ``best_values``/``best_ids`` (T',) are its per-frame max."""
        if self._beam is not None:
            self._beam.accept(log_probs)
        else:
            self._best_ids.append(best_ids)
            self._best_values.append(best_values)

    def partial(self) -> NBest:
        if self._beam is not None:
            return self._beam.partial()
        return self._greedy()

    def final(self) -> NBest:
        if self._beam is not None:
            return self._beam.finalize()
        return self._greedy()

    def stability(self, nbest: NBest) -> float:
        """Posterior share of the best prefix within the beam (greedy: the path's confidence)."""
        if not nbest.hypotheses:
            return 0.0
        if self._beam is None:
            return nbest.best.confidence
        scores = torch.tensor([h.score for h in nbest.hypotheses], dtype=torch.float64)
        return float(torch.exp(scores[0] - torch.logsumexp(scores, dim=0)))

    def _greedy(self) -> NBest:
        if not self._best_ids:
            return NBest([])
        ids, values = np.concatenate(self._best_ids), np.concatenate(self._best_values)
        return NBest([collapse_best_path(ids, values, self.cfg.blank_id)])


def _resolve_search(recognizer: Recognizer, search: SearchConfig | None) -> SearchConfig:
    """An explicit search must be streamable; a non-streamable default falls back to prefix beam."""
    if search is not None:
        if search.method not in STREAMABLE_METHODS:
            raise ConfigError(
                f"streaming search method must be one of {', '.join(STREAMABLE_METHODS)}, got {search.method!r}; "
                "use StreamingOptions.rescore for two-pass attention rescoring of finals"
            )
        return search
    cfg = recognizer.search_config
    return cfg if cfg.method in STREAMABLE_METHODS else replace(cfg, method="ctc_prefix_beam")


class StreamingSession:
    """One audio stream: ``push`` PCM, step (``accept`` or :func:`step_batch`), read results; ``finish``.

    State kept between calls is bounded: the waveform tail of the next frame's window plus
    unread samples, at most one chunk plus right context of features, the encoder's carried
    state, and the current utterance's search (capped by ``max_utterance_s``).
    """

    _utterance_index: int
    _utterance_start_frame: int
    _closed: bool
    _enc_state: EncoderChunkState
    _enc_chunks: list[Tensor]  # (1, T'_c, D) per chunk, for two-pass rescoring only
    _trailing_blank: int  # encoder frames whose best label is blank, at the end of the utterance
    _trailing_quiet: int  # feature frames below the quiet threshold, at the end of the utterance
    _floor: float  # loudness of the stream's quietest and loudest feature frames so far
    _peak: float
    _last_partial: str

    def __init__(self, recognizer: Recognizer, options: StreamingOptions | None = None) -> None:
        self.recognizer = recognizer
        self.options = options or StreamingOptions()
        if self.options.left_context_ms < 0:
            raise ConfigError(f"streaming left_context_ms must be >= 0, got {self.options.left_context_ms}")
        self._features = open_feature_stream(recognizer, self.options.left_context_ms)
        self._hop, self._rate = self._features.hop, recognizer.sample_rate
        factor = recognizer.model.subsampling_factor
        self.chunk_frames = _chunk_frames(self.options.chunk_ms, self._rate, self._hop, factor)
        if self.options.right_context_ms < 0 or self.options.endpoint_silence_ms < 0:
            raise ConfigError("streaming right_context_ms and endpoint_silence_ms must be >= 0")
        if not 0 <= self.options.endpoint_quiet_ratio <= 1:
            ratio = self.options.endpoint_quiet_ratio
            raise ConfigError(f"streaming endpoint_quiet_ratio must be in [0, 1], got {ratio}")
        if self.options.max_utterance_s <= 0:
            raise ConfigError(f"streaming max_utterance_s must be > 0, got {self.options.max_utterance_s}")
        self.right_frames = math.ceil(self.options.right_context_ms * self._rate / 1000 / self._hop)
        self.search_config = _resolve_search(recognizer, self.options.search)
        self._rescore = self.options.rescore and recognizer.model.decoder is not None
        self._search = _UtteranceSearch(self.search_config, recognizer)
        self.reset()

    # ------------------------------------------------------------------------ public surface
    def push(self, samples: np.ndarray) -> None:
        """Buffer float32 mono samples at the recognizer's rate; any size, no compute."""
        if self._closed:
            raise RuntimeError("push on a finished stream; call reset() to start a new one")
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise AudioError(f"streaming audio must be 1-D mono samples, got shape {samples.shape}")
        if not np.all(np.isfinite(samples)):
            raise AudioError("streaming audio contains NaN or infinite samples")
        self._features.push(samples)

    def ready(self) -> bool:
        """True when a full chunk plus its right context can be encoded."""
        return not self._closed and self._features.frames_ready() >= self.chunk_frames + self.right_frames

    def accept(self, samples: np.ndarray) -> list[StreamingResult]:
        """Push, then step until not ready (the single-session path)."""
        self.push(samples)
        results: list[StreamingResult] = []
        while self.ready():
            results.extend(step_batch([self])[0])
        return results

    def finish(self) -> list[StreamingResult]:
        """End of stream: encode what is left with whatever look-ahead exists, emit the final result(s)."""
        return finish_batch([self])[0]

    def reset(self) -> None:
        """Forget everything and start a new stream at time 0."""
        self._features.reset()
        self._floor, self._peak = math.inf, -math.inf
        self._utterance_index = 0
        self._closed = False
        self._start_utterance()

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio pushed since the stream started."""
        return self._features.total_samples / self._rate

    @property
    def closed(self) -> bool:
        return self._closed

    # ---------------------------------------------------------------------------- internals
    @property
    def _frames_consumed(self) -> int:
        """Feature frames of the stream the encoder has consumed."""
        return self._features.frames_consumed

    @property
    def _pending(self) -> Tensor:
        """``(T, F)`` normalised features not yet encoded."""
        return self._features.pending

    def _start_utterance(self) -> None:
        self._utterance_start_frame = self._frames_consumed
        self._features.start_utterance()
        self._enc_state = EncoderChunkState()
        self._search.reset()
        self._enc_chunks = []
        self._trailing_blank = 0
        self._trailing_quiet = 0
        self._last_partial = ""

    def _seconds(self, feature_frames: int) -> float:
        return feature_frames * self._hop / self._rate

    def _advance(
        self, enc: Tensor, log_probs: Tensor, stats: _ChunkStats, state: EncoderChunkState, frames: int
    ) -> list[StreamingResult]:
        """Consume ``frames`` encoded feature frames: ``enc (1, T'_c, D)``, ``log_probs (T'_c, V)``."""
        self._count_quiet(stats.loudness)
        self._features.consume(frames)
        self._enc_state = state
        if self._rescore:
            self._enc_chunks.append(enc)
        best_ids = stats.best_ids
        self._search.accept(log_probs, stats.best_values, best_ids)
        labelled = np.flatnonzero(best_ids != self.search_config.blank_id)
        if len(labelled):
            self._trailing_blank = len(best_ids) - 1 - int(labelled[-1])
        else:
            self._trailing_blank += len(best_ids)
        nbest = self._search.partial()
        speech = bool(nbest.best.tokens)
        silence_ms = self._trailing_blank * self.recognizer.frame_shift_s * 1000
        quiet_ms = 1000 * self._seconds(self._trailing_quiet) if self.options.endpoint_quiet_ratio else math.inf
        endpoint = 0 < self.options.endpoint_silence_ms <= min(silence_ms, quiet_ms)
        too_long = self._seconds(self._frames_consumed - self._utterance_start_frame) >= self.options.max_utterance_s
        if speech and (endpoint or too_long):
            return [self._final(end_s=self._seconds(self._frames_consumed))]
        if not speech and (endpoint or too_long):
            self._start_utterance()  # nothing said: move the utterance start past the silence
            return []
        text = self.recognizer.tokenizer.decode(nbest.best.tokens)
        if not self.options.interim_results or not text or text == self._last_partial:
            return []
        self._last_partial = text
        start_s, end_s = self._seconds(self._utterance_start_frame), self._seconds(self._frames_consumed)
        transcript = self._transcript(nbest, start_s, end_s)
        return [
            StreamingResult(transcript, False, self._search.stability(nbest), start_s, end_s, self._utterance_index)
        ]

    def _count_quiet(self, loudness: np.ndarray) -> None:
        """Advance the trailing-quiet count over ``loudness (frames,)`` of the consumed feature frames."""
        self._floor = min(self._floor, float(loudness.min()))
        self._peak = max(self._peak, float(loudness.max()))
        threshold = self._floor + self.options.endpoint_quiet_ratio * (self._peak - self._floor)
        loud = np.flatnonzero(loudness > threshold)
        if len(loud):
            self._trailing_quiet = len(loudness) - 1 - int(loud[-1])
        else:
            self._trailing_quiet += len(loudness)

    def _final(self, end_s: float) -> StreamingResult:
        nbest = self._search.final()
        decoder = self.recognizer.model.decoder
        if self._rescore and decoder is not None and self._enc_chunks:
            enc = torch.cat(self._enc_chunks, dim=1)  # (1, T', D)
            lens = torch.tensor([enc.size(1)], device=enc.device)
            cfg = self.search_config
            nbest = attention_rescore(nbest, decoder, enc, lens, ctc_weight=cfg.ctc_weight, eos_id=cfg.eos_id)
        start_s = self._seconds(self._utterance_start_frame)
        result = StreamingResult(
            self._transcript(nbest, start_s, end_s), True, 1.0, start_s, end_s, self._utterance_index
        )
        self._utterance_index += 1
        self._start_utterance()
        return result

    def _transcript(self, nbest: NBest, start_s: float, end_s: float) -> Transcript:
        """The top ``nbest`` hypotheses as a Transcript whose word times are shifted into stream time."""
        duration = end_s - start_s
        recognizer = self.recognizer
        alternatives = []
        for hyp in nbest.hypotheses[: self.search_config.nbest]:
            words = tuple(
                Word(w.word, round(start_s + w.start_s, 3), round(start_s + min(w.end_s, duration), 3), w.confidence)
                for w in word_timings(hyp, recognizer.pieces, recognizer.frame_shift_s)
            )
            text = recognizer.tokenizer.decode(hyp.tokens)
            alternatives.append(Alternative(text, float(hyp.confidence), float(hyp.score), words))
        return Transcript(alternatives=tuple(alternatives), duration_s=duration)


def _chunk_frames(chunk_ms: int, sample_rate: int, hop: int, factor: int) -> int:
    """Feature frames per chunk; ConfigError unless ``chunk_ms`` is a positive multiple of hop × factor."""
    step_ms = 1000 * hop * factor / sample_rate
    samples = chunk_ms * sample_rate / 1000
    if chunk_ms <= 0 or samples % (hop * factor):
        raise ConfigError(f"streaming chunk_ms must be a positive multiple of {step_ms:g} ms, got {chunk_ms}")
    return int(samples) // hop


@dataclass(frozen=True)
class _ChunkStats:
    """One row's per-frame reductions, taken for the whole batch at once (one device sync, not one per stream)."""

    loudness: np.ndarray  # (frames,) loudness of each consumed feature frame (asr.stream_features)
    best_values: np.ndarray  # (T'_c,) best log-prob per encoder frame
    best_ids: np.ndarray  # (T'_c,) its label


def _chunk_stats(
    sessions: Sequence[StreamingSession], log_probs: Tensor, sizes: Sequence[int], factor: int
) -> list[_ChunkStats]:
    """Per-row stats of CPU ``log_probs (B, T'_c, V)`` and each session's pending loudness; row b consumes ``sizes[b]``.

    The loudness of the whole batch is moved to the CPU at once: one device sync, not one per stream.
    """
    loudness = (
        torch.stack(
            [nn.functional.pad(s._features.loudness[:size], (0, max(sizes) - size)) for s, size in zip(sessions, sizes)]
        )
        .cpu()
        .numpy()
    )  # (B, max size): one device sync for the batch
    values, ids = (t.numpy() for t in log_probs.max(dim=-1))  # (B, T'_c) each
    stats = []
    for b, size in enumerate(sizes):
        frames = -(-size // factor)
        stats.append(_ChunkStats(loudness[b, :size], values[b, :frames], ids[b, :frames]))
    return stats


def _encode_group(sessions: Sequence[StreamingSession], size: int, *, started: bool) -> list[list[StreamingResult]]:
    """Encode ``size`` pending frames of every session (plus right context) in one forward pass."""
    first = sessions[0]
    right = min(first.right_frames, min(len(s._pending) for s in sessions) - size)
    feats = torch.stack([s._pending[:size] for s in sessions])  # (B, size, F)
    right_feats = torch.stack([s._pending[size : size + right] for s in sessions])  # (B, right, F)
    state = EncoderChunkState.stack([s._enc_state for s in sessions]) if started else EncoderChunkState()
    model = first.recognizer.model
    enc, new_state = model.encode_chunk(feats, right_feats, state)  # (B, T'_c, D)
    log_probs = model.ctc_log_probs(enc).float().cpu()  # (B, T'_c, V)
    states = new_state.split()
    stats = _chunk_stats(sessions, log_probs, [size] * len(sessions), model.subsampling_factor)
    return [s._advance(enc[b : b + 1], log_probs[b], stats[b], states[b], size) for b, s in enumerate(sessions)]


def _encode_tails(sessions: Sequence[StreamingSession], *, started: bool) -> list[list[StreamingResult]]:
    """Encode the next piece of every session's end-of-stream tail in one forward pass.

    A tail is shorter than chunk + right context and its length differs per stream, so rows are
    padded and ``forward_chunk`` is given each row's real length (``valid``): each row sees
    exactly what it would alone — its chunk (or less) and whatever look-ahead is left.
    """
    first = sessions[0]
    chunk, right, factor = first.chunk_frames, first.right_frames, first.recognizer.model.subsampling_factor
    lengths = [min(len(s._pending), chunk + right) for s in sessions]
    sizes = [min(chunk, length) for length in lengths]
    width = min(chunk, max(lengths))
    feats = torch.zeros(len(sessions), width, first._pending.size(1), device=first._pending.device)
    right_feats = torch.zeros(len(sessions), max(lengths) - width, feats.size(2), device=feats.device)
    for b, (session, length) in enumerate(zip(sessions, lengths, strict=True)):
        feats[b, : min(width, length)] = session._pending[: min(width, length)]
        right_feats[b, : max(0, length - width)] = session._pending[width:length]
    state = EncoderChunkState.stack([s._enc_state for s in sessions]) if started else EncoderChunkState()
    model = first.recognizer.model
    valid = torch.tensor(lengths)
    enc, new_state = model.encode_chunk(feats, right_feats, state, valid=valid)  # (B, T'_c, D)
    log_probs = model.ctc_log_probs(enc).float().cpu()  # (B, T'_c, V)
    states = new_state.split()
    stats = _chunk_stats(sessions, log_probs, sizes, factor)
    results = []
    for b, (session, size) in enumerate(zip(sessions, sizes, strict=True)):
        frames = -(-size // factor)
        results.append(session._advance(enc[b : b + 1, :frames], log_probs[b, :frames], stats[b], states[b], size))
    return results


def _encode_tail_alone(session: StreamingSession) -> list[StreamingResult]:
    size = min(session.chunk_frames, len(session._pending))
    return _encode_group([session], size, started=session._enc_state.started)[0]


@torch.inference_mode()
def step_batch(sessions: Sequence[StreamingSession]) -> list[list[StreamingResult]]:
    """Encode one chunk of every ready session; results per session, in order (empty if not ready).

    Sessions are grouped by recognizer and chunk/right-context sizes, and by whether their
    utterance has started (a first chunk has no left context, so it cannot share a stacked
    state): in steady state that is one frontend pass and one encoder forward for all.
    """
    results: list[list[StreamingResult]] = [[] for _ in sessions]
    groups: dict[tuple[int, int, int, bool], list[int]] = {}
    for i, session in enumerate(sessions):
        if session.ready():
            key = (id(session.recognizer), session.chunk_frames, session.right_frames, session._enc_state.started)
            groups.setdefault(key, []).append(i)
    for (_, chunk, right, started), indices in groups.items():
        group = [sessions[i] for i in indices]
        compute([s._features for s in group], chunk + right)
        for i, out in zip(indices, _encode_group(group, chunk, started=started), strict=True):
            results[i] = out
    return results


@torch.inference_mode()
def finish_batch(sessions: Sequence[StreamingSession]) -> list[list[StreamingResult]]:
    """End of stream for every session: encode what is left with whatever look-ahead exists and
    emit the final result(s); results per session, in order. Finished sessions are closed.

    Streams that end together (a burst of hang-ups) share forward passes: whole chunks still
    buffered go through :func:`step_batch`, then the tails (each shorter than chunk + right
    context) are encoded side by side with per-row lengths, so ending 100 streams costs a few
    batched passes instead of 100 single ones. Each stream's result equals finishing it alone.
    """
    results: list[list[StreamingResult]] = [[] for _ in sessions]
    live = [i for i, s in enumerate(sessions) if not s._closed]
    while ready := [i for i in live if sessions[i].ready()]:
        for i, out in zip(ready, step_batch([sessions[i] for i in ready]), strict=True):
            results[i].extend(out)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i in live:
        session = sessions[i]
        groups.setdefault((id(session.recognizer), session.chunk_frames, session.right_frames), []).append(i)
    for (_, chunk, right), indices in groups.items():
        group = [sessions[i] for i in indices]
        compute([s._features for s in group], chunk + right, final=True)  # everything buffered fits in chunk + right
        row_lengths = group[0].recognizer.model.encoder.chunk_row_lengths
        while pending := [i for i in indices if len(sessions[i]._pending)]:
            # A first chunk has no state to stack with the others' (an endpoint inside a tail restarts one).
            part = [i for i in pending if not sessions[i]._enc_state.started] or pending
            started = sessions[part[0]]._enc_state.started
            if row_lengths:
                outs = _encode_tails([sessions[i] for i in part], started=started)
            else:  # int8 layers take no per-row lengths: one stream at a time
                outs = [_encode_tail_alone(sessions[i]) for i in part]
            for i, out in zip(part, outs, strict=True):
                results[i].extend(out)
    for i in live:
        session = sessions[i]
        if session._search.final().best.tokens:
            results[i].append(session._final(end_s=session.audio_seconds))
        session._closed = True
    return results
