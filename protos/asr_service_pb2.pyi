from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_LINEAR16: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_WAV: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_FLAC: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_OGG: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_MP3: _ClassVar[AudioEncoding]

class SearchMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_METHOD_UNSPECIFIED: _ClassVar[SearchMethod]
    SEARCH_METHOD_CTC_GREEDY: _ClassVar[SearchMethod]
    SEARCH_METHOD_CTC_PREFIX_BEAM: _ClassVar[SearchMethod]
    SEARCH_METHOD_ATTENTION_BEAM: _ClassVar[SearchMethod]
    SEARCH_METHOD_JOINT: _ClassVar[SearchMethod]
    SEARCH_METHOD_RESCORING: _ClassVar[SearchMethod]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
AUDIO_ENCODING_LINEAR16: AudioEncoding
AUDIO_ENCODING_WAV: AudioEncoding
AUDIO_ENCODING_FLAC: AudioEncoding
AUDIO_ENCODING_OGG: AudioEncoding
AUDIO_ENCODING_MP3: AudioEncoding
SEARCH_METHOD_UNSPECIFIED: SearchMethod
SEARCH_METHOD_CTC_GREEDY: SearchMethod
SEARCH_METHOD_CTC_PREFIX_BEAM: SearchMethod
SEARCH_METHOD_ATTENTION_BEAM: SearchMethod
SEARCH_METHOD_JOINT: SearchMethod
SEARCH_METHOD_RESCORING: SearchMethod

class PhraseHint(_message.Message):
    __slots__ = ("phrase", "boost")
    PHRASE_FIELD_NUMBER: _ClassVar[int]
    BOOST_FIELD_NUMBER: _ClassVar[int]
    phrase: str
    boost: float
    def __init__(self, phrase: _Optional[str] = ..., boost: _Optional[float] = ...) -> None: ...

class RecognitionConfig(_message.Message):
    __slots__ = ("encoding", "sample_rate_hz", "audio_channel_count", "max_alternatives", "enable_word_time_offsets", "enable_word_confidence", "search_method", "beam_size", "phrase_hints", "model")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CHANNEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    ENABLE_WORD_TIME_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_WORD_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_METHOD_FIELD_NUMBER: _ClassVar[int]
    BEAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    PHRASE_HINTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    encoding: AudioEncoding
    sample_rate_hz: int
    audio_channel_count: int
    max_alternatives: int
    enable_word_time_offsets: bool
    enable_word_confidence: bool
    search_method: SearchMethod
    beam_size: int
    phrase_hints: _containers.RepeatedCompositeFieldContainer[PhraseHint]
    model: str
    def __init__(self, encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate_hz: _Optional[int] = ..., audio_channel_count: _Optional[int] = ..., max_alternatives: _Optional[int] = ..., enable_word_time_offsets: _Optional[bool] = ..., enable_word_confidence: _Optional[bool] = ..., search_method: _Optional[_Union[SearchMethod, str]] = ..., beam_size: _Optional[int] = ..., phrase_hints: _Optional[_Iterable[_Union[PhraseHint, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class EndpointingConfig(_message.Message):
    __slots__ = ("silence_ms", "disabled", "max_utterance_s")
    SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    MAX_UTTERANCE_S_FIELD_NUMBER: _ClassVar[int]
    silence_ms: int
    disabled: bool
    max_utterance_s: float
    def __init__(self, silence_ms: _Optional[int] = ..., disabled: _Optional[bool] = ..., max_utterance_s: _Optional[float] = ...) -> None: ...

class StreamingConfig(_message.Message):
    __slots__ = ("config", "interim_results", "endpointing")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    INTERIM_RESULTS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTING_FIELD_NUMBER: _ClassVar[int]
    config: RecognitionConfig
    interim_results: bool
    endpointing: EndpointingConfig
    def __init__(self, config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., interim_results: _Optional[bool] = ..., endpointing: _Optional[_Union[EndpointingConfig, _Mapping]] = ...) -> None: ...

class RecognizeRequest(_message.Message):
    __slots__ = ("config", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: RecognitionConfig
    audio: bytes
    def __init__(self, config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class StreamingRecognizeRequest(_message.Message):
    __slots__ = ("config", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: StreamingConfig
    audio: bytes
    def __init__(self, config: _Optional[_Union[StreamingConfig, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class WordInfo(_message.Message):
    __slots__ = ("word", "start_time_s", "end_time_s", "confidence")
    WORD_FIELD_NUMBER: _ClassVar[int]
    START_TIME_S_FIELD_NUMBER: _ClassVar[int]
    END_TIME_S_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    word: str
    start_time_s: float
    end_time_s: float
    confidence: float
    def __init__(self, word: _Optional[str] = ..., start_time_s: _Optional[float] = ..., end_time_s: _Optional[float] = ..., confidence: _Optional[float] = ...) -> None: ...

class SpeechRecognitionAlternative(_message.Message):
    __slots__ = ("transcript", "confidence", "words")
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    transcript: str
    confidence: float
    words: _containers.RepeatedCompositeFieldContainer[WordInfo]
    def __init__(self, transcript: _Optional[str] = ..., confidence: _Optional[float] = ..., words: _Optional[_Iterable[_Union[WordInfo, _Mapping]]] = ...) -> None: ...

class SpeechRecognitionResult(_message.Message):
    __slots__ = ("alternatives", "is_final", "stability", "result_start_time_s", "result_end_time_s", "utterance_index")
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    STABILITY_FIELD_NUMBER: _ClassVar[int]
    RESULT_START_TIME_S_FIELD_NUMBER: _ClassVar[int]
    RESULT_END_TIME_S_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    alternatives: _containers.RepeatedCompositeFieldContainer[SpeechRecognitionAlternative]
    is_final: bool
    stability: float
    result_start_time_s: float
    result_end_time_s: float
    utterance_index: int
    def __init__(self, alternatives: _Optional[_Iterable[_Union[SpeechRecognitionAlternative, _Mapping]]] = ..., is_final: _Optional[bool] = ..., stability: _Optional[float] = ..., result_start_time_s: _Optional[float] = ..., result_end_time_s: _Optional[float] = ..., utterance_index: _Optional[int] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("results", "audio_duration_s", "processing_time_ms", "request_id")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SpeechRecognitionResult]
    audio_duration_s: float
    processing_time_ms: float
    request_id: str
    def __init__(self, results: _Optional[_Iterable[_Union[SpeechRecognitionResult, _Mapping]]] = ..., audio_duration_s: _Optional[float] = ..., processing_time_ms: _Optional[float] = ..., request_id: _Optional[str] = ...) -> None: ...

class StreamingRecognizeResponse(_message.Message):
    __slots__ = ("results", "processing_latency_ms", "request_id")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SpeechRecognitionResult]
    processing_latency_ms: float
    request_id: str
    def __init__(self, results: _Optional[_Iterable[_Union[SpeechRecognitionResult, _Mapping]]] = ..., processing_latency_ms: _Optional[float] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "is_default", "sample_rate_hz", "search_methods", "max_beam_size", "max_alternatives", "max_phrase_hints", "max_audio_s", "max_stream_s", "max_request_bytes", "max_concurrent_streams", "device")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    SEARCH_METHODS_FIELD_NUMBER: _ClassVar[int]
    MAX_BEAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    MAX_PHRASE_HINTS_FIELD_NUMBER: _ClassVar[int]
    MAX_AUDIO_S_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_S_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_STREAMS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    name: str
    is_default: bool
    sample_rate_hz: int
    search_methods: _containers.RepeatedScalarFieldContainer[SearchMethod]
    max_beam_size: int
    max_alternatives: int
    max_phrase_hints: int
    max_audio_s: float
    max_stream_s: float
    max_request_bytes: int
    max_concurrent_streams: int
    device: str
    def __init__(self, name: _Optional[str] = ..., is_default: _Optional[bool] = ..., sample_rate_hz: _Optional[int] = ..., search_methods: _Optional[_Iterable[_Union[SearchMethod, str]]] = ..., max_beam_size: _Optional[int] = ..., max_alternatives: _Optional[int] = ..., max_phrase_hints: _Optional[int] = ..., max_audio_s: _Optional[float] = ..., max_stream_s: _Optional[float] = ..., max_request_bytes: _Optional[int] = ..., max_concurrent_streams: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...
