"""Protobuf ↔ library types, with the request checks that belong to the API surface.

Nothing here touches tensors: audio bytes become float32 waveforms through :mod:`asr.audio`,
request options become a :class:`SearchConfig` (validated against the server's limits), and
:class:`Transcript` / :class:`StreamingResult` become response messages.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from asr.audio import decode_pcm16, load_audio, probe_audio, resample
from asr.config import BoostPhrase, SearchConfig
from asr.errors import AudioError, ConfigError, LimitExceeded
from asr.inference import Alternative, Transcript
from asr.streaming import STREAMABLE_METHODS as STREAMING_METHODS
from asr.streaming import StreamingOptions, StreamingResult
from protos import asr_service_pb2 as pb
from server.config import ServerConfig

METHODS: dict[int, str] = {
    pb.SEARCH_METHOD_CTC_GREEDY: "ctc_greedy",
    pb.SEARCH_METHOD_CTC_PREFIX_BEAM: "ctc_prefix_beam",
    pb.SEARCH_METHOD_ATTENTION_BEAM: "attention_beam",
    pb.SEARCH_METHOD_JOINT: "joint",
    pb.SEARCH_METHOD_RESCORING: "rescoring",
}
_MAX_SAMPLE_RATE_HZ = 192_000
# The first bytes of containers that clients send by mistake as raw samples: decoded as PCM, a WAV
# header is one click and the rest plays, so the mistake would pass unnoticed; compressed audio is noise.
_CONTAINER_MAGIC = {b"RIFF": "WAV", b"fLaC": "FLAC", b"OggS": "OGG", b"ID3": "MP3"}


def search_config(config: pb.RecognitionConfig, default: SearchConfig, limits: ServerConfig) -> SearchConfig:
    """The request's search settings over the model's defaults; ConfigError beyond the server's limits."""
    changes: dict[str, object] = {}
    if config.search_method != pb.SEARCH_METHOD_UNSPECIFIED:
        if config.search_method not in METHODS:
            raise ConfigError(f"unknown search_method {config.search_method}; see the SearchMethod enum")
        changes["method"] = METHODS[config.search_method]
    if config.beam_size < 0 or config.beam_size > limits.max_beam_size:
        raise ConfigError(f"beam_size {config.beam_size} is outside [1, {limits.max_beam_size}] (0 = default)")
    if config.beam_size:
        changes["beam_size"] = config.beam_size
    if config.max_alternatives < 0 or config.max_alternatives > limits.max_alternatives:
        raise ConfigError(
            f"max_alternatives {config.max_alternatives} is outside [1, {limits.max_alternatives}] (0 = 1)"
        )
    changes["nbest"] = max(1, config.max_alternatives)
    if len(config.phrase_hints) > limits.max_phrase_hints:
        raise ConfigError(f"{len(config.phrase_hints)} phrase hints; this server accepts {limits.max_phrase_hints}")
    if config.phrase_hints:
        changes["boost_phrases"] = tuple(_boost(h, limits.default_boost) for h in config.phrase_hints)
    return dataclasses.replace(default, **changes)  # type: ignore[arg-type]


def _boost(hint: pb.PhraseHint, default_boost: float) -> BoostPhrase:
    if not hint.phrase.strip():
        raise ConfigError("a phrase hint is empty; send words to boost or drop the hint")
    if not np.isfinite(hint.boost) or abs(hint.boost) > 100:
        raise ConfigError(f"phrase hint {hint.phrase!r}: boost {hint.boost} is outside [-100, 100]")
    return BoostPhrase(hint.phrase, hint.boost or default_boost)


def decode_audio(config: pb.RecognitionConfig, audio: bytes, sample_rate: int, max_audio_s: float) -> np.ndarray:
    """Request bytes → float32 mono (N,) at ``sample_rate``; LimitExceeded beyond ``max_audio_s``.

    Durations are checked before decoding: LINEAR16's follows from the byte count, a container's
    from its header (a declared ``sample_rate_hz`` must match that header).
    """
    if not audio:
        raise AudioError("the request has no audio; put the file's bytes (or LINEAR16 samples) in `audio`")
    if config.encoding == pb.AUDIO_ENCODING_LINEAR16:
        rate, channels = linear16_format(config)
        _check_duration(len(audio) / (2 * channels * rate), max_audio_s)
        waveform = decode_pcm16(audio, rate, sample_rate, channels=channels)
    else:
        native_rate, seconds = probe_audio(audio)
        if config.sample_rate_hz and config.sample_rate_hz != native_rate:
            raise ConfigError(
                f"sample_rate_hz {config.sample_rate_hz} disagrees with the {native_rate} Hz in the audio's "
                "header; omit sample_rate_hz for wav/flac/ogg/mp3 or declare the header's rate"
            )
        _check_duration(seconds, max_audio_s)  # before decoding: a small FLAC can hold hours
        waveform = load_audio(audio, sample_rate)
        _check_duration(len(waveform) / sample_rate, max_audio_s)
    if len(waveform) == 0:
        raise AudioError("the request's audio decodes to zero samples; send at least one full sample")
    return waveform


def linear16_format(config: pb.RecognitionConfig) -> tuple[int, int]:
    """(sample rate, channels) declared for raw PCM; ConfigError when missing or absurd."""
    if not 0 < config.sample_rate_hz <= _MAX_SAMPLE_RATE_HZ:
        raise ConfigError(
            f"sample_rate_hz {config.sample_rate_hz} is invalid for LINEAR16; declare the PCM rate "
            f"(1 to {_MAX_SAMPLE_RATE_HZ} Hz)"
        )
    if not 0 <= config.audio_channel_count <= 32:
        raise ConfigError(f"audio_channel_count {config.audio_channel_count} is outside [1, 32] (0 = 1)")
    return config.sample_rate_hz, max(1, config.audio_channel_count)


def _check_duration(seconds: float, limit_s: float) -> None:
    if seconds > limit_s:
        raise LimitExceeded(
            f"the audio is {seconds:.1f} s long; Recognize accepts up to {limit_s:g} s: "
            "split it or use StreamingRecognize"
        )


class PcmStream:
    """LINEAR16 chunks at the client's rate → float32 mono at the model's rate, seamless across chunks.

    Resampling each chunk on its own puts filter edge effects at every chunk boundary (enough to
    change transcripts). Instead each conversion sees ``context_s`` of real audio on both sides:
    the right edge is held back until the next chunk (or :meth:`flush`), and segments start on
    whole resampling periods, so the output matches resampling the whole stream at once.
    """

    def __init__(self, rate: int, target_rate: int, channels: int, *, context_s: float = 0.064) -> None:
        self._rate, self._target, self._channels = rate, target_rate, channels
        divisor = math.gcd(rate, target_rate)
        self._period_in, self._period_out = rate // divisor, target_rate // divisor
        self._context = math.ceil(context_s * rate / self._period_in) * self._period_in  # whole periods
        self._buffer = np.zeros(0, dtype=np.float32)  # left context, then input not yet converted
        self._emitted = 0  # samples at the start of the buffer that are context only
        self._started = False  # a non-empty chunk has arrived (only the first is checked for a file header)

    def push(self, data: bytes) -> np.ndarray:
        if data and not self._started:
            self._started = True
            _refuse_container(data)
        samples = decode_pcm16(data, self._rate, self._rate, channels=self._channels)
        if self._rate == self._target:
            return samples
        self._buffer = np.concatenate([self._buffer, samples])
        ready = (len(self._buffer) - self._emitted - self._context) // self._period_in * self._period_in
        if ready <= 0:
            return np.zeros(0, dtype=np.float32)
        end = self._emitted + ready
        out = self._convert(self._buffer[: end + self._context], self._emitted, end)
        keep_from = max(0, end - self._context)
        self._buffer, self._emitted = self._buffer[keep_from:], end - keep_from
        return out

    def flush(self) -> np.ndarray:
        """The held-back tail, at the end of the stream."""
        if self._rate == self._target or len(self._buffer) == self._emitted:
            return np.zeros(0, dtype=np.float32)
        out = self._convert(self._buffer, self._emitted, None)
        self._buffer, self._emitted = self._buffer[:0], 0
        return out

    def _convert(self, segment: np.ndarray, start: int, end: int | None) -> np.ndarray:
        """Output samples for input ``segment[start:end]`` (start and end on period boundaries)."""
        out = resample(segment, self._rate, self._target)
        first = start // self._period_in * self._period_out
        return out[first:] if end is None else out[first : end // self._period_in * self._period_out]


def _refuse_container(first_chunk: bytes) -> None:
    for magic, kind in _CONTAINER_MAGIC.items():
        if first_chunk.startswith(magic):
            raise AudioError(
                f"the stream starts with a {kind} file header, but streams carry raw LINEAR16 samples: "
                "send the file to Recognize, or its PCM samples without the header"
            )


def streaming_options(config: pb.StreamingConfig, default: SearchConfig, limits: ServerConfig) -> StreamingOptions:
    """A stream's options; the chunk sizes are the server's, so every stream can share a batch."""
    recognition = config.config
    if recognition.encoding != pb.AUDIO_ENCODING_LINEAR16:
        raise ConfigError(
            "StreamingRecognize needs encoding AUDIO_ENCODING_LINEAR16 (chunks of a container cannot be "
            "decoded alone); send the file to Recognize or stream its PCM samples"
        )
    linear16_format(recognition)
    method = METHODS.get(recognition.search_method)
    if method is not None and method not in STREAMING_METHODS:
        raise ConfigError(f"search method {method!r} cannot stream; use one of {', '.join(STREAMING_METHODS)}")
    search = search_config(recognition, default, limits)  # an offline-only model default streams as prefix beam
    endpointing = config.endpointing
    if endpointing.silence_ms < 0 or endpointing.max_utterance_s < 0:
        raise ConfigError("endpointing.silence_ms and endpointing.max_utterance_s must not be negative")
    silence_ms = 0 if endpointing.disabled else endpointing.silence_ms or limits.endpoint_silence_ms
    return StreamingOptions(
        chunk_ms=limits.chunk_ms,
        right_context_ms=limits.right_context_ms,
        left_context_ms=limits.left_context_ms,
        interim_results=config.interim_results,
        endpoint_silence_ms=silence_ms,
        max_utterance_s=endpointing.max_utterance_s or limits.max_utterance_s,
        search=search,
    )


def recognize_response(transcript: Transcript, config: pb.RecognitionConfig) -> pb.RecognizeResponse:
    result = pb.SpeechRecognitionResult(
        alternatives=[alternative(a, config) for a in transcript.alternatives],
        is_final=True,
        stability=1.0,
        result_start_time_s=0.0,
        result_end_time_s=transcript.duration_s,
    )
    return pb.RecognizeResponse(results=[result], audio_duration_s=transcript.duration_s)


def streaming_result(result: StreamingResult, config: pb.RecognitionConfig) -> pb.SpeechRecognitionResult:
    return pb.SpeechRecognitionResult(
        alternatives=[alternative(a, config) for a in result.transcript.alternatives],
        is_final=result.is_final,
        stability=result.stability,
        result_start_time_s=result.start_s,
        result_end_time_s=result.end_s,
        utterance_index=result.utterance_index,
    )


def alternative(alt: Alternative, config: pb.RecognitionConfig) -> pb.SpeechRecognitionAlternative:
    """Words are included only when times or confidences were asked for (they cost bytes per partial)."""
    words = []
    if config.enable_word_time_offsets or config.enable_word_confidence:
        times, confidences = config.enable_word_time_offsets, config.enable_word_confidence
        words = [
            pb.WordInfo(
                word=w.word,
                start_time_s=w.start_s if times else 0.0,
                end_time_s=w.end_s if times else 0.0,
                confidence=w.confidence if confidences else 0.0,
            )
            for w in alt.words
        ]
    return pb.SpeechRecognitionAlternative(transcript=alt.text, confidence=alt.confidence, words=words)
