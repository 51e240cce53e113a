"""Client-side result and option types, so callers never handle protobuf objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from protos import asr_service_pb2 as pb

Method = Literal["default", "ctc_greedy", "ctc_prefix_beam", "attention_beam", "joint", "rescoring"]
Encoding = Literal["container", "linear16"]

_METHODS: dict[str, int] = {
    "default": pb.SEARCH_METHOD_UNSPECIFIED,
    "ctc_greedy": pb.SEARCH_METHOD_CTC_GREEDY,
    "ctc_prefix_beam": pb.SEARCH_METHOD_CTC_PREFIX_BEAM,
    "attention_beam": pb.SEARCH_METHOD_ATTENTION_BEAM,
    "joint": pb.SEARCH_METHOD_JOINT,
    "rescoring": pb.SEARCH_METHOD_RESCORING,
}
_METHOD_NAMES = {number: name for name, number in _METHODS.items()}


@dataclass(frozen=True)
class RecognitionOptions:
    encoding: Encoding = "container"  # container: WAV/FLAC/OGG/MP3 bytes; linear16: raw 16-bit PCM
    sample_rate_hz: int = 0  # linear16 only
    channels: int = 1  # linear16 only
    max_alternatives: int = 1
    word_times: bool = True
    word_confidence: bool = True
    method: Method = "default"
    beam_size: int = 0  # 0 = the server's default
    phrase_hints: tuple[tuple[str, float], ...] = ()  # (phrase, boost); boost 0 = the server's default
    model: str = ""  # empty = the server's default model

    def to_proto(self) -> pb.RecognitionConfig:
        return pb.RecognitionConfig(
            encoding=pb.AUDIO_ENCODING_LINEAR16 if self.encoding == "linear16" else pb.AUDIO_ENCODING_UNSPECIFIED,
            sample_rate_hz=self.sample_rate_hz,
            audio_channel_count=self.channels,
            max_alternatives=self.max_alternatives,
            enable_word_time_offsets=self.word_times,
            enable_word_confidence=self.word_confidence,
            search_method=_METHODS[self.method],  # type: ignore[arg-type]
            beam_size=self.beam_size,
            phrase_hints=[pb.PhraseHint(phrase=p, boost=b) for p, b in self.phrase_hints],
            model=self.model,
        )


@dataclass(frozen=True)
class StreamOptions:
    """Streams carry raw LINEAR16 PCM at ``sample_rate_hz``."""

    sample_rate_hz: int = 16000
    recognition: RecognitionOptions = field(default_factory=RecognitionOptions)
    interim_results: bool = True
    endpoint_silence_ms: int = 0  # 0 = the server's default
    endpointing: bool = True  # False: only the end of the stream finalises
    max_utterance_s: float = 0.0  # 0 = the server's default

    def to_proto(self) -> pb.StreamingConfig:
        recognition = self.recognition.to_proto()
        recognition.encoding = pb.AUDIO_ENCODING_LINEAR16
        recognition.sample_rate_hz = self.sample_rate_hz
        return pb.StreamingConfig(
            config=recognition,
            interim_results=self.interim_results,
            endpointing=pb.EndpointingConfig(
                silence_ms=self.endpoint_silence_ms, disabled=not self.endpointing, max_utterance_s=self.max_utterance_s
            ),
        )


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float
    end_s: float
    confidence: float


@dataclass(frozen=True)
class Alternative:
    text: str
    confidence: float
    words: tuple[Word, ...]

    @classmethod
    def from_proto(cls, alt: pb.SpeechRecognitionAlternative) -> Alternative:
        words = tuple(Word(w.word, w.start_time_s, w.end_time_s, w.confidence) for w in alt.words)
        return cls(alt.transcript, alt.confidence, words)


@dataclass(frozen=True)
class Transcript:
    """A Recognize result; ``alternatives[0]`` is the best."""

    alternatives: tuple[Alternative, ...]
    duration_s: float
    processing_time_ms: float
    request_id: str

    @property
    def text(self) -> str:
        return self.alternatives[0].text if self.alternatives else ""

    @property
    def words(self) -> tuple[Word, ...]:
        return self.alternatives[0].words if self.alternatives else ()

    @classmethod
    def from_proto(cls, response: pb.RecognizeResponse) -> Transcript:
        alternatives = tuple(Alternative.from_proto(a) for r in response.results for a in r.alternatives)
        return cls(alternatives, response.audio_duration_s, response.processing_time_ms, response.request_id)


@dataclass(frozen=True)
class StreamingUpdate:
    """One streaming result: a partial (``is_final`` False) or the final text of an utterance."""

    alternatives: tuple[Alternative, ...]
    is_final: bool
    stability: float
    start_s: float
    end_s: float
    utterance_index: int
    latency_ms: float  # the server's processing latency for this result
    request_id: str

    @property
    def text(self) -> str:
        return self.alternatives[0].text if self.alternatives else ""

    @classmethod
    def from_proto(cls, response: pb.StreamingRecognizeResponse) -> list[StreamingUpdate]:
        return [
            cls(
                alternatives=tuple(Alternative.from_proto(a) for a in r.alternatives),
                is_final=r.is_final,
                stability=r.stability,
                start_s=r.result_start_time_s,
                end_s=r.result_end_time_s,
                utterance_index=r.utterance_index,
                latency_ms=response.processing_latency_ms,
                request_id=response.request_id,
            )
            for r in response.results
        ]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    is_default: bool
    sample_rate_hz: int
    search_methods: tuple[str, ...]
    max_beam_size: int
    max_alternatives: int
    max_phrase_hints: int
    max_audio_s: float
    max_stream_s: float
    max_request_bytes: int
    max_concurrent_streams: int
    device: str

    @classmethod
    def from_proto(cls, m: pb.ModelInfo) -> ModelInfo:
        return cls(
            m.name, m.is_default, m.sample_rate_hz, tuple(_METHOD_NAMES[x] for x in m.search_methods),
            m.max_beam_size, m.max_alternatives, m.max_phrase_hints, m.max_audio_s, m.max_stream_s,
            m.max_request_bytes, m.max_concurrent_streams, m.device,
        )
