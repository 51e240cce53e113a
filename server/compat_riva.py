"""``nvidia.riva.asr.RivaSpeechRecognition`` on top of the ``asr.v1`` servicer, for unmodified Riva clients.

Each RPC translates the Riva request into an ``asr.v1`` one, runs it through the same
:class:`RecognizerServicer` (so the same batcher, stream slots, limits and metrics apply) and
translates the response back. Options this server cannot honour raise :class:`ConfigError`
(INVALID_ARGUMENT through the ErrorInterceptor's one table) instead of being dropped silently.

Mapping: LINEAR_PCM → LINEAR16 (a whole WAV file sent as LINEAR_PCM, as Riva's examples do, is
read from its header), FLAC and OGGOPUS → containers; speech_contexts → phrase hints with their
boost; endpointing_config.stop_history → end-of-utterance silence; words (start/end ms and
confidence) when enable_word_time_offsets. Refused: MULAW, ALAW, non-English language_code,
profanity_filter, automatic punctuation, per-channel recognition, diarization,
custom_configuration, runtime_config and the endpointing thresholds. verbatim_transcripts is
ignored: transcripts are always verbatim.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from asr.errors import ConfigError
from protos import asr_service_pb2 as pb
from protos.compat import generic_handler, message_class
from server.servicer import RecognizerServicer

SERVICE_NAME = "nvidia.riva.asr.RivaSpeechRecognition"
_LINEAR_PCM, _FLAC, _OGGOPUS = 1, 2, 4  # nvidia.riva.AudioEncoding values
_CONTAINERS = {0: pb.AUDIO_ENCODING_UNSPECIFIED, _FLAC: pb.AUDIO_ENCODING_FLAC, _OGGOPUS: pb.AUDIO_ENCODING_OGG}
_REFUSED_ENDPOINTING = ("start_history", "start_threshold", "stop_threshold", "stop_history_eou", "stop_threshold_eou")


def _msg(name: str) -> Any:
    return message_class(f"nvidia.riva.asr.{name}")


def check_language(code: str) -> None:
    """The served models are English; refuse another language rather than transcribe it as English."""
    if code and not code.lower().startswith("en"):
        raise ConfigError(f"language_code {code!r} is not served; this server recognizes English (en-US)")


def _refuse(config: Any) -> None:
    flags = {
        "profanity_filter": config.profanity_filter,
        "enable_automatic_punctuation": config.enable_automatic_punctuation,
        "enable_separate_recognition_per_channel": config.enable_separate_recognition_per_channel,
        "diarization_config.enable_speaker_diarization": config.diarization_config.enable_speaker_diarization,
        "custom_configuration": len(config.custom_configuration) > 0,
    }
    flags.update({f"endpointing_config.{n}": getattr(config.endpointing_config, n) != 0 for n in _REFUSED_ENDPOINTING})
    refuse_enabled(flags)


def refuse_enabled(flags: dict[str, bool]) -> None:
    """INVALID_ARGUMENT naming every unsupported feature the request turned on: never silently ignore one."""
    refused = [name for name, on in flags.items() if on]
    if refused:
        raise ConfigError(f"not supported by this server: {', '.join(refused)}; unset them")


def recognition_config(config: Any, audio: bytes = b"") -> pb.RecognitionConfig:
    """A Riva RecognitionConfig as ``asr.v1``; ``audio`` (Recognize only) lets a WAV header override LINEAR_PCM."""
    _refuse(config)
    check_language(config.language_code)
    if config.encoding == _LINEAR_PCM and not audio.startswith(b"RIFF"):
        encoding = pb.AUDIO_ENCODING_LINEAR16
    elif config.encoding == _LINEAR_PCM:
        encoding = pb.AUDIO_ENCODING_WAV
    elif config.encoding in _CONTAINERS:
        encoding = _CONTAINERS[config.encoding]
    else:
        raise ConfigError(f"audio encoding {config.encoding} (MULAW/ALAW) is not supported; send LINEAR_PCM or FLAC")
    hints = [pb.PhraseHint(phrase=p, boost=c.boost) for c in config.speech_contexts for p in c.phrases]
    return pb.RecognitionConfig(
        encoding=encoding,
        sample_rate_hz=config.sample_rate_hertz,
        audio_channel_count=config.audio_channel_count,
        max_alternatives=config.max_alternatives,
        enable_word_time_offsets=config.enable_word_time_offsets,
        enable_word_confidence=config.enable_word_time_offsets,  # Riva's words always carry a confidence
        phrase_hints=hints,
        model=config.model,
    )


def _alternative(alt: pb.SpeechRecognitionAlternative) -> Any:
    words = [
        _msg("WordInfo")(
            word=w.word,
            start_time=round(w.start_time_s * 1000),  # Riva times are int32 milliseconds
            end_time=round(w.end_time_s * 1000),
            confidence=w.confidence,
        )
        for w in alt.words
    ]
    return _msg("SpeechRecognitionAlternative")(transcript=alt.transcript, confidence=alt.confidence, words=words)


class RivaServicer:
    """Riva's three RPCs, delegating recognition to the ``asr.v1`` servicer."""

    def __init__(self, core: RecognizerServicer, model_name: str, sample_rate_hz: int) -> None:
        self._core, self._model_name, self._sample_rate_hz = core, model_name, sample_rate_hz

    async def Recognize(self, request: Any, context: aio.ServicerContext) -> Any:
        config = recognition_config(request.config, request.audio)
        response = await self._core.Recognize(pb.RecognizeRequest(config=config, audio=request.audio), context)
        results = [
            _msg("SpeechRecognitionResult")(
                alternatives=[_alternative(a) for a in r.alternatives],
                channel_tag=1,
                audio_processed=r.result_end_time_s,
            )
            for r in response.results
        ]
        return _msg("RecognizeResponse")(results=results, id=request.id)

    async def StreamingRecognize(self, request_iterator: AsyncIterator[Any], context: aio.ServicerContext) -> Any:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("streaming_request") != "streaming_config":
            raise ConfigError("the first StreamingRecognizeRequest must carry streaming_config; audio comes after it")
        if first.runtime_config:
            raise ConfigError("runtime_config is not supported by this server; leave it empty")
        riva_config = first.streaming_config.config
        config = recognition_config(riva_config)
        if config.encoding != pb.AUDIO_ENCODING_LINEAR16:
            raise ConfigError("StreamingRecognize needs encoding LINEAR_PCM (raw samples, no file header)")
        stop_ms = riva_config.endpointing_config.stop_history
        streaming = pb.StreamingConfig(
            config=config,
            interim_results=first.streaming_config.interim_results,
            endpointing=pb.EndpointingConfig(silence_ms=max(stop_ms, 0)),  # 0 or less: the server's default
        )

        async def requests() -> AsyncIterator[pb.StreamingRecognizeRequest]:
            yield pb.StreamingRecognizeRequest(config=streaming)
            async for request in request_iterator:
                if request.WhichOneof("streaming_request") != "audio_content":
                    raise ConfigError("streaming_config may only be sent once, in the first message; send audio")
                yield pb.StreamingRecognizeRequest(audio=request.audio_content)

        async for response in self._core.StreamingRecognize(requests(), context):
            results = [
                _msg("StreamingRecognitionResult")(
                    alternatives=[_alternative(a) for a in r.alternatives],
                    is_final=r.is_final,
                    stability=r.stability,
                    channel_tag=1,
                    audio_processed=r.result_end_time_s,
                )
                for r in response.results
            ]
            yield _msg("StreamingRecognizeResponse")(results=results, id=first.id)

    async def GetRivaSpeechRecognitionConfig(self, request: Any, context: aio.ServicerContext) -> Any:
        if request.model_name and request.model_name != self._model_name:
            raise ConfigError(f"unknown model {request.model_name!r}; this server serves {self._model_name!r}")
        parameters = {
            "language_code": "en-US",
            "sample_rate": str(self._sample_rate_hz),
            "type": "online",  # Riva's word for a model that also streams
            "streaming": "true",
        }
        config = _msg("RivaSpeechRecognitionConfigResponse.Config")(model_name=self._model_name, parameters=parameters)
        return _msg("RivaSpeechRecognitionConfigResponse")(model_config=[config])


def add_to_server(servicer: RivaServicer, server: aio.Server) -> None:
    """Register the service under Riva's method paths (no generated stub module is needed)."""
    methods = {
        "Recognize": (servicer.Recognize, "RecognizeRequest", "RecognizeResponse", False),
        "StreamingRecognize": (
            servicer.StreamingRecognize,
            "StreamingRecognizeRequest",
            "StreamingRecognizeResponse",
            True,
        ),
        "GetRivaSpeechRecognitionConfig": (
            servicer.GetRivaSpeechRecognitionConfig,
            "RivaSpeechRecognitionConfigRequest",
            "RivaSpeechRecognitionConfigResponse",
            False,
        ),
    }
    server.add_generic_rpc_handlers((generic_handler(SERVICE_NAME, "nvidia.riva.asr", methods),))
