"""The one composition of the pipeline: audio → features → encoder → (CTC | attention) → search → text.

Training validation, ``asr eval``, ``asr transcribe`` and the server all call
:meth:`Recognizer.transcribe_batch`, so a number measured anywhere is the number users get.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from asr.audio import audio_duration, load_audio
from asr.checkpoint import ModelBundle, load_checkpoint
from asr.config import EMBEDDED_LM, SearchConfig
from asr.decoding.hypothesis import Hypothesis
from asr.decoding.ngram import NgramLM, load_arpa, parse_arpa
from asr.decoding.search import search
from asr.decoding.timestamps import word_timings
from asr.errors import AudioError, ConfigError
from asr.runtime import keep_freed_memory

if TYPE_CHECKING:
    from asr.streaming import StreamingOptions, StreamingSession


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float
    end_s: float
    confidence: float  # in [0, 1]


@dataclass(frozen=True)
class Alternative:
    text: str
    confidence: float  # hypothesis confidence in [0, 1]
    score: float  # the search's log score (comparable only within one n-best)
    words: tuple[Word, ...]


@dataclass(frozen=True)
class Transcript:
    """Result for one utterance; ``alternatives[0]`` is the best."""

    alternatives: tuple[Alternative, ...]
    duration_s: float

    @property
    def text(self) -> str:
        return self.alternatives[0].text if self.alternatives else ""

    @property
    def words(self) -> tuple[Word, ...]:
        return self.alternatives[0].words if self.alternatives else ()

    @property
    def confidence(self) -> float:
        return self.alternatives[0].confidence if self.alternatives else 0.0


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was requested but no GPU is available; use --device cpu")
    return resolved


def pad_waveforms(waveforms: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad 1-D float waveforms into (B, N) plus lengths (B,)."""
    lens = torch.tensor([len(w) for w in waveforms], dtype=torch.long)
    waves = torch.zeros(len(waveforms), int(lens.max()) if len(waveforms) else 0)
    for i, w in enumerate(waveforms):
        waves[i, : len(w)] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    return waves, lens


class Recognizer:
    """A loaded model plus default search settings; thread-safe for concurrent callers."""

    def __init__(self, bundle: ModelBundle, *, device: str = "auto", search: SearchConfig | None = None) -> None:
        self.bundle = bundle
        keep_freed_memory()
        if bundle.quantization == "int8_dynamic":  # PyTorch's dynamic int8 kernels exist for CPU only
            if device not in ("auto", "cpu"):
                raise ConfigError(f"this model is int8-quantised and runs on CPU only; use --device cpu, not {device}")
            device = "cpu"
        self.device = resolve_device(device)
        self.config = bundle.config
        self.tokenizer = bundle.tokenizer
        self.frontend = bundle.frontend.to(self.device).eval()
        self.cmvn = bundle.cmvn.to(self.device).eval()
        self.model = bundle.model.to(self.device).eval()
        self.search_config = search if search is not None else bundle.config.search
        self.pieces = list(self.tokenizer.pieces)
        self._lms: dict[str, NgramLM] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str = "auto", search: SearchConfig | None = None
    ) -> Recognizer:
        return cls(load_checkpoint(path), device=device, search=search)

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    @property
    def frame_shift_s(self) -> float:
        """Seconds per encoder frame: feature hop × subsampling factor (the CTC time resolution)."""
        return self.frontend.frame_shift_s * self.config.model.encoder.subsampling_factor

    def lm(self, path: str) -> NgramLM | None:
        """Load an ARPA LM once per path (``@model``: the checkpoint's own) and keep it."""
        if not path:
            return None
        with self._lock:
            if path == EMBEDDED_LM and path not in self._lms:
                if not self.bundle.ngram_arpa:
                    raise ConfigError(f"lm_path {EMBEDDED_LM!r}: this model stores no n-gram; give an ARPA file")
                self._lms[path] = parse_arpa(self.bundle.ngram_arpa, f"{EMBEDDED_LM} n-gram")
            if path not in self._lms:
                if not Path(path).is_file():
                    raise ConfigError(f"LM file {path} does not exist; build one with `asr lm` or drop --lm")
                self._lms[path] = load_arpa(path)
            return self._lms[path]

    def boost_ids(self, cfg: SearchConfig) -> list[tuple[list[int], float]]:
        """Tokenised boost phrases; empty phrases are refused rather than silently ignored."""
        boosts = []
        for phrase in cfg.boost_phrases:
            ids = self.tokenizer.encode(phrase.phrase)
            if not ids:
                raise ConfigError(f"boost phrase {phrase.phrase!r} has no recognisable characters")
            boosts.append((ids, phrase.boost))
        return boosts

    @torch.inference_mode()
    def encode(self, waves: torch.Tensor, wave_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) waveforms → encoder output (B, T', D) and lengths (B,), on the model's device."""
        waves, wave_lens = waves.to(self.device), wave_lens.to(self.device)
        feats, feat_lens = self.frontend(waves, wave_lens)
        feats = self.cmvn(feats, feat_lens)
        return self.model.encode(feats, feat_lens)

    @torch.inference_mode()
    def transcribe_batch(
        self, waveforms: Sequence[np.ndarray], search_config: SearchConfig | None = None
    ) -> list[Transcript]:
        """Transcribe float32 mono waveforms at :attr:`sample_rate`, padded and run as one batch."""
        if not waveforms:
            return []
        for i, w in enumerate(waveforms):
            if w.ndim != 1 or len(w) == 0:
                raise AudioError(f"waveform {i} must be a non-empty 1-D array, got shape {w.shape}")
        cfg = search_config or self.search_config
        waves, wave_lens = pad_waveforms(waveforms)
        enc, enc_lens = self.encode(waves, wave_lens)
        log_probs = self.model.ctc_log_probs(enc).float()
        needs_decoder = cfg.method in ("attention_beam", "joint", "rescoring")
        if needs_decoder and self.model.decoder is None:
            raise ConfigError(f"search method {cfg.method!r} needs an attention decoder; this model is CTC-only")
        nbests = search(
            log_probs.cpu(),
            enc_lens.cpu(),
            cfg,
            pieces=self.pieces,
            decoder=self.model.decoder if needs_decoder else None,
            enc=enc if needs_decoder else None,
            enc_lens=enc_lens if needs_decoder else None,
            lm=self.lm(cfg.lm_path) if cfg.lm_weight != 0.0 else None,
            boost=self.boost_ids(cfg),
        )
        results = []
        for b, nbest in enumerate(nbests):
            duration = float(wave_lens[b]) / self.sample_rate
            alternatives = tuple(self._alternative(h, duration) for h in nbest.hypotheses[: cfg.nbest])
            results.append(Transcript(alternatives=alternatives, duration_s=duration))
        return results

    def _alternative(self, hyp: Hypothesis, duration_s: float) -> Alternative:
        words = tuple(
            Word(w.word, round(w.start_s, 3), round(min(w.end_s, duration_s), 3), float(w.confidence))
            for w in word_timings(hyp, self.pieces, self.frame_shift_s)
        )
        return Alternative(self.tokenizer.decode(hyp.tokens), float(hyp.confidence), float(hyp.score), words)

    def transcribe_files(
        self,
        paths: Sequence[str | Path],
        search_config: SearchConfig | None = None,
        *,
        batch_seconds: float = 120.0,
    ) -> list[Transcript]:
        """Transcribe files in duration-sorted batches; results keep the input order.

        Raises the first file's :class:`AudioError`; use :meth:`iter_files` to go on past bad files.
        """
        results: list[Transcript | None] = [None] * len(paths)
        for index, result in self.iter_files(paths, search_config, batch_seconds=batch_seconds):
            if isinstance(result, AudioError):
                raise result
            results[index] = result
        return [r for r in results if r is not None]

    def iter_files(
        self,
        paths: Sequence[str | Path],
        search_config: SearchConfig | None = None,
        *,
        batch_seconds: float = 120.0,
    ) -> Iterator[tuple[int, Transcript | AudioError]]:
        """Yield ``(input index, transcript or the file's AudioError)`` as batches finish.

        Files are grouped by header duration (padding stays small) and decoded one batch at a time,
        so memory is bounded by ``batch_seconds`` however many files there are; a bad file is
        reported and never stops the others.
        """
        durations: dict[int, float] = {}
        for i, path in enumerate(paths):
            try:
                durations[i] = audio_duration(path)
            except AudioError as exc:
                yield i, exc
        batch: list[tuple[int, np.ndarray]] = []
        for i in sorted(durations, key=durations.__getitem__):
            try:
                wave = load_audio(paths[i], self.sample_rate, max_duration_s=self.config.audio.max_duration_s)
            except AudioError as exc:
                yield i, exc
                continue
            longest = max([len(w) for _, w in batch] + [len(wave)])
            if batch and longest * (len(batch) + 1) / self.sample_rate > batch_seconds:
                yield from self._run_batch(batch, search_config)
                batch = []
            batch.append((i, wave))
        if batch:
            yield from self._run_batch(batch, search_config)

    def _run_batch(
        self, batch: list[tuple[int, np.ndarray]], cfg: SearchConfig | None
    ) -> Iterator[tuple[int, Transcript | AudioError]]:
        transcripts = self.transcribe_batch([wave for _, wave in batch], cfg)
        for (i, _), transcript in zip(batch, transcripts):
            yield i, transcript

    def open_stream(self, options: StreamingOptions | None = None) -> StreamingSession:
        """A streaming session on this model (partials, endpointing, finals); see :mod:`asr.streaming`."""
        from asr.streaming import StreamingSession

        return StreamingSession(self, options)

    def with_search(self, **changes: Any) -> SearchConfig:
        """The default search config with some fields replaced (validated by the search itself)."""
        return dataclasses.replace(self.search_config, **changes)
