"""``google.cloud.speech.v1.Speech`` (Recognize, StreamingRecognize) on top of the ``asr.v1`` servicer.

Same shape as :mod:`server.compat_riva`: translate the request, run it through the one
:class:`RecognizerServicer`, translate the response. Unsupported options raise ConfigError
(INVALID_ARGUMENT), as Google does for a config it cannot serve.

Mapping: LINEAR16 → LINEAR16 (or a WAV file's own header), FLAC, MP3 and OGG_OPUS → containers,
ENCODING_UNSPECIFIED → a WAV/FLAC container read from its header; speech_contexts → phrase hints
(boost passed as is: a log-score bonus per token, 0 = the server's default); word times and
confidences as ``google.protobuf.Duration`` on final results only, as Google sends them;
interim_results, is_final, stability (partials only; 0 on finals, as Google), result_end_time;
single_utterance ends the stream after the first final with END_OF_SINGLE_UTTERANCE. Refused:
MULAW, AMR, AMR_WB, SPEEX, WEBM_OPUS, audio.uri, non-English language_code,
alternative_language_codes, profanity_filter, punctuation, spoken punctuation/emojis,
per-channel recognition, diarization, adaptation, transcript_normalization and voice-activity
events. Ignored: ``model`` and ``use_enhanced`` (this server has one model) and ``metadata``.
LongRunningRecognize is not served (UNIMPLEMENTED): it needs google.longrunning.Operations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from grpc import aio

from asr.errors import ConfigError
from protos import asr_service_pb2 as pb
from protos.compat import generic_handler, message_class
from server.compat_riva import check_language, refuse_enabled
from server.servicer import RecognizerServicer

SERVICE_NAME = "google.cloud.speech.v1.Speech"
_ENCODINGS = {  # google.cloud.speech.v1.RecognitionConfig.AudioEncoding → asr.v1
    0: pb.AUDIO_ENCODING_UNSPECIFIED,
    1: pb.AUDIO_ENCODING_LINEAR16,
    2: pb.AUDIO_ENCODING_FLAC,
    6: pb.AUDIO_ENCODING_OGG,
    8: pb.AUDIO_ENCODING_MP3,
}
_END_OF_SINGLE_UTTERANCE = 1  # StreamingRecognizeResponse.SpeechEventType


def _msg(name: str) -> Any:
    return message_class(f"google.cloud.speech.v1.{name}")


def _refuse(config: Any) -> None:
    flags = {
        "alternative_language_codes": len(config.alternative_language_codes) > 0,
        "profanity_filter": config.profanity_filter,
        "enable_automatic_punctuation": config.enable_automatic_punctuation,
        "enable_spoken_punctuation": config.enable_spoken_punctuation.value,
        "enable_spoken_emojis": config.enable_spoken_emojis.value,
        "enable_separate_recognition_per_channel": config.enable_separate_recognition_per_channel,
        "diarization_config.enable_speaker_diarization": config.diarization_config.enable_speaker_diarization,
        "adaptation": config.HasField("adaptation"),
        "transcript_normalization": len(config.transcript_normalization.entries) > 0,
    }
    refuse_enabled(flags)


def recognition_config(config: Any, audio: bytes = b"") -> pb.RecognitionConfig:
    """A Google RecognitionConfig as ``asr.v1``; ``audio`` (Recognize only) lets a WAV header override LINEAR16."""
    _refuse(config)
    check_language(config.language_code)
    if config.encoding not in _ENCODINGS:
        raise ConfigError(f"audio encoding {config.encoding} is not supported; send LINEAR16, FLAC, MP3 or OGG_OPUS")
    encoding = _ENCODINGS[config.encoding]
    if encoding == pb.AUDIO_ENCODING_LINEAR16 and audio.startswith(b"RIFF"):
        encoding = pb.AUDIO_ENCODING_WAV
    return pb.RecognitionConfig(
        encoding=encoding,
        sample_rate_hz=config.sample_rate_hertz,
        audio_channel_count=config.audio_channel_count,
        max_alternatives=config.max_alternatives,
        enable_word_time_offsets=config.enable_word_time_offsets,
        enable_word_confidence=config.enable_word_confidence,
        phrase_hints=[pb.PhraseHint(phrase=p, boost=c.boost) for c in config.speech_contexts for p in c.phrases],
    )


def _duration(seconds: float) -> Any:
    nanos = round(seconds * 1e9)
    return message_class("google.protobuf.Duration")(seconds=nanos // 10**9, nanos=nanos % 10**9)


def _alternative(alt: pb.SpeechRecognitionAlternative, final: bool) -> Any:
    if not final:  # Google sends only the transcript on interim results
        return _msg("SpeechRecognitionAlternative")(transcript=alt.transcript)
    words = [
        _msg("WordInfo")(
            word=w.word, start_time=_duration(w.start_time_s), end_time=_duration(w.end_time_s), confidence=w.confidence
        )
        for w in alt.words
    ]
    return _msg("SpeechRecognitionAlternative")(transcript=alt.transcript, confidence=alt.confidence, words=words)


def _streaming_result(result: pb.SpeechRecognitionResult, language_code: str) -> Any:
    return _msg("StreamingRecognitionResult")(
        alternatives=[_alternative(a, result.is_final) for a in result.alternatives],
        is_final=result.is_final,
        stability=0.0 if result.is_final else result.stability,
        result_end_time=_duration(result.result_end_time_s),
        channel_tag=1,
        language_code=language_code,
    )


class SpeechServicer:
    """Google's Recognize and StreamingRecognize, delegating recognition to the ``asr.v1`` servicer."""

    def __init__(self, core: RecognizerServicer) -> None:
        self._core = core

    async def Recognize(self, request: Any, context: aio.ServicerContext) -> Any:
        if request.audio.WhichOneof("audio_source") == "uri":
            raise ConfigError("audio.uri is not supported (this server reads no cloud storage); send audio.content")
        audio = request.audio.content
        config = recognition_config(request.config, audio)
        response = await self._core.Recognize(pb.RecognizeRequest(config=config, audio=audio), context)
        results = [
            _msg("SpeechRecognitionResult")(
                alternatives=[_alternative(a, final=True) for a in r.alternatives],
                channel_tag=1,
                result_end_time=_duration(r.result_end_time_s),
                language_code=request.config.language_code,
            )
            for r in response.results
        ]
        return _msg("RecognizeResponse")(results=results, total_billed_time=_duration(response.audio_duration_s))

    async def StreamingRecognize(self, request_iterator: AsyncIterator[Any], context: aio.ServicerContext) -> Any:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("streaming_request") != "streaming_config":
            raise ConfigError("the first StreamingRecognizeRequest must carry streaming_config; audio comes after it")
        streaming_config = first.streaming_config
        if streaming_config.enable_voice_activity_events or streaming_config.HasField("voice_activity_timeout"):
            raise ConfigError("voice activity events and timeouts are not supported by this server; unset them")
        config = recognition_config(streaming_config.config)
        if config.encoding != pb.AUDIO_ENCODING_LINEAR16:
            raise ConfigError("StreamingRecognize needs encoding LINEAR16 (raw samples, no file header)")
        streaming = pb.StreamingConfig(config=config, interim_results=streaming_config.interim_results)

        async def requests() -> AsyncIterator[pb.StreamingRecognizeRequest]:
            yield pb.StreamingRecognizeRequest(config=streaming)
            async for request in request_iterator:
                if request.WhichOneof("streaming_request") != "audio_content":
                    raise ConfigError("streaming_config may only be sent once, in the first message; send audio")
                yield pb.StreamingRecognizeRequest(audio=request.audio_content)

        language_code = streaming_config.config.language_code
        core_stream: Any = self._core.StreamingRecognize(requests(), context)  # an async generator
        async with aclosing(core_stream) as responses:
            async for response in responses:
                results = [_streaming_result(r, language_code) for r in response.results]
                final = any(r.is_final for r in response.results)
                if streaming_config.single_utterance and final:
                    # Google announces the end of the utterance, sends its final, then closes the stream.
                    yield _msg("StreamingRecognizeResponse")(speech_event_type=_END_OF_SINGLE_UTTERANCE)
                    yield _msg("StreamingRecognizeResponse")(results=results)
                    return
                yield _msg("StreamingRecognizeResponse")(results=results)


def add_to_server(servicer: SpeechServicer, server: aio.Server) -> None:
    """Register the service under Google's method paths (LongRunningRecognize stays UNIMPLEMENTED)."""
    methods = {
        "Recognize": (servicer.Recognize, "RecognizeRequest", "RecognizeResponse", False),
        "StreamingRecognize": (
            servicer.StreamingRecognize,
            "StreamingRecognizeRequest",
            "StreamingRecognizeResponse",
            True,
        ),
    }
    server.add_generic_rpc_handlers((generic_handler(SERVICE_NAME, "google.cloud.speech.v1", methods),))
