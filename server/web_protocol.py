"""The web API's messages: JSON control messages and binary PCM frames over a WebSocket, JSON over HTTP.

A WebSocket stream (``GET /v1/stream``), documented for any client in the README:

- client → server, first: ``{"type": "start", "sample_rate_hz": 16000, ...}`` (the options of
  :data:`START_FIELDS`, mirroring ``client.StreamOptions``);
- then binary frames of little-endian signed 16-bit PCM at ``sample_rate_hz`` (interleaved when
  ``channels`` > 1), any length that holds whole samples;
- finally ``{"type": "stop"}``: the server sends the remaining finals and closes with 1000.
- server → client: ``{"type": "ready"}`` once the stream holds a slot, ``{"type": "result"}`` per
  partial or final, and on failure ``{"type": "error", "code": "<gRPC status name>"}`` followed by
  a close with code ``4000 + <gRPC status number>`` (so 4003 INVALID_ARGUMENT, 4008
  RESOURCE_EXHAUSTED, 4013 INTERNAL, 4014 UNAVAILABLE, 4016 UNAUTHENTICATED).

Each message becomes the ``asr.v1`` request the gRPC path takes, so both paths share one set of
checks: everything here only translates, and refuses what it cannot translate (ConfigError).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import grpc

from asr.errors import ConfigError
from protos import asr_service_pb2 as pb
from server.convert import METHODS

WS_CLOSE_ERROR_BASE = 4000  # close code = this + the gRPC status number (4000–4999 are for applications)
METHOD_BY_NAME = {name: number for number, name in METHODS.items()}

# The start message's fields and their JSON types (mirroring client.StreamOptions); unknown keys are refused.
START_FIELDS: dict[str, type | tuple[type, ...]] = {
    "type": str,  # "start"
    "sample_rate_hz": int,  # rate of the PCM frames (required); the server resamples other rates to the model's
    "channels": int,  # interleaved channels, averaged to mono (default 1)
    "token": str,  # bearer token when the server needs one (or ?token=, or an Authorization header)
    "interim_results": bool,  # send partials (default true)
    "endpoint_silence_ms": int,  # trailing silence that ends an utterance (0 = the server's default)
    "endpointing": bool,  # false: only "stop" finalises (default true)
    "max_utterance_s": (int, float),  # force a final after this much audio (0 = the server's default)
    "method": str,  # ctc_greedy or ctc_prefix_beam (default: the model's)
    "beam_size": int,  # prefix beam width (0 = the model's default)
    "max_alternatives": int,  # n-best size of each result (default 1)
    "phrase_hints": list,  # phrases to boost: "phrase" or {"phrase": "...", "boost": 2.0}
    "word_times": bool,  # words with start/end times and confidences in each result (default false)
    "model": str,  # the served model's name (default: it)
}


@dataclass(frozen=True)
class StartMessage:
    config: pb.StreamingConfig
    token: str  # empty when the client sent none in the message


def _json_object(text: str | bytes, what: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        message = None
    if not isinstance(message, dict):
        raise ConfigError(f"{what} must be a JSON object with a \"type\"; binary frames carry the PCM audio")
    return message


def _checked(message: dict[str, Any]) -> dict[str, Any]:
    for key, value in message.items():
        if key not in START_FIELDS:
            raise ConfigError(f"unknown start field {key!r}; valid: {', '.join(START_FIELDS)}")
        expected = START_FIELDS[key]
        types = expected if isinstance(expected, tuple) else (expected,)
        # JSON true/false parse as bool, which Python also counts as int: never accept one for the other.
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"start field {key!r} must be {names}, got {json.dumps(value)}")
    return message


def _phrase_hint(hint: Any) -> pb.PhraseHint:
    if isinstance(hint, str):
        return pb.PhraseHint(phrase=hint)
    if isinstance(hint, dict) and isinstance(hint.get("phrase"), str) and set(hint) <= {"phrase", "boost"}:
        boost = hint.get("boost", 0.0)
        if isinstance(boost, (int, float)) and not isinstance(boost, bool):
            return pb.PhraseHint(phrase=hint["phrase"], boost=boost)
    raise ConfigError(f'a phrase hint must be "phrase" or {{"phrase": "...", "boost": number}}, got {json.dumps(hint)}')


def parse_start(text: str | bytes) -> StartMessage:
    """The first message → the ``asr.v1`` StreamingConfig the gRPC path takes, and the token it carried."""
    message = _checked(_json_object(text, "the first message"))
    if message.get("type") != "start":
        raise ConfigError('the first message must be {"type": "start", "sample_rate_hz": ...}; audio comes after it')
    method = message.get("method", "")
    if method and method not in METHOD_BY_NAME:
        raise ConfigError(f"unknown method {method!r}; one of {', '.join(METHOD_BY_NAME)}")
    recognition = pb.RecognitionConfig(
        encoding=pb.AUDIO_ENCODING_LINEAR16,
        sample_rate_hz=message.get("sample_rate_hz", 0),
        audio_channel_count=message.get("channels", 1),
        max_alternatives=message.get("max_alternatives", 1),
        enable_word_time_offsets=message.get("word_times", False),
        enable_word_confidence=message.get("word_times", False),
        search_method=METHOD_BY_NAME.get(method, pb.SEARCH_METHOD_UNSPECIFIED),  # type: ignore[arg-type]
        beam_size=message.get("beam_size", 0),
        phrase_hints=[_phrase_hint(h) for h in message.get("phrase_hints", [])],
        model=message.get("model", ""),
    )
    endpointing = pb.EndpointingConfig(
        silence_ms=message.get("endpoint_silence_ms", 0),
        disabled=not message.get("endpointing", True),
        max_utterance_s=message.get("max_utterance_s", 0.0),
    )
    config = pb.StreamingConfig(
        config=recognition, interim_results=message.get("interim_results", True), endpointing=endpointing
    )
    return StartMessage(config, message.get("token", ""))


def is_stop(text: str | bytes) -> bool:
    """True for ``{"type": "stop"}``; any other text message mid-stream is refused."""
    message = _json_object(text, "a text message")
    if message.get("type") == "start":
        raise ConfigError('"start" may only be sent once, as the first message; send audio frames or "stop"')
    if message != {"type": "stop"}:
        raise ConfigError(f'after "start" only binary PCM frames and {{"type": "stop"}} are accepted, got {text!r:.80}')
    return True


def _s(seconds: float) -> float:
    """Times to the millisecond: protobuf floats are 32-bit, and 0.3199999928 helps no reader."""
    return round(seconds, 3)


def _p(probability: float) -> float:
    return round(probability, 4)


def _words(alternative: pb.SpeechRecognitionAlternative) -> list[dict[str, Any]]:
    return [
        {"word": w.word, "start_s": _s(w.start_time_s), "end_s": _s(w.end_time_s), "confidence": _p(w.confidence)}
        for w in alternative.words
    ]


def _alternatives(result: pb.SpeechRecognitionResult) -> dict[str, Any]:
    best = result.alternatives[0] if result.alternatives else pb.SpeechRecognitionAlternative()
    body: dict[str, Any] = {"text": best.transcript, "confidence": _p(best.confidence), "words": _words(best)}
    if len(result.alternatives) > 1:
        body["alternatives"] = [{"text": a.transcript, "confidence": _p(a.confidence)} for a in result.alternatives]
    return body


def result_messages(response: pb.StreamingRecognizeResponse) -> list[dict[str, Any]]:
    """One ``result`` message per result of a streaming response (times in seconds from the stream start)."""
    return [
        {
            "type": "result",
            "is_final": result.is_final,
            **_alternatives(result),
            "start_s": _s(result.result_start_time_s),
            "end_s": _s(result.result_end_time_s),
            "stability": _p(result.stability),
            "utterance_index": result.utterance_index,
            "latency_ms": round(response.processing_latency_ms, 1),  # audio arrival → result, inside the server
        }
        for result in response.results
    ]


def transcript_message(response: pb.RecognizeResponse) -> dict[str, Any]:
    """A whole-file transcript (``POST /v1/recognize``)."""
    result = response.results[0] if response.results else pb.SpeechRecognitionResult()
    return {
        **_alternatives(result),
        "duration_s": _s(response.audio_duration_s),
        "processing_ms": round(response.processing_time_ms, 1),
        "request_id": response.request_id,
    }


def error_message(code: grpc.StatusCode, message: str, request_id: str) -> dict[str, Any]:
    return {"type": "error", "code": code.name, "message": message, "request_id": request_id}


def close_code(code: grpc.StatusCode) -> int:
    """The WebSocket close code for a stream that failed with ``code``."""
    return WS_CLOSE_ERROR_BASE + int(code.value[0])


# The usual HTTP equivalents of gRPC status codes (as grpc-gateway and Google APIs map them).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
}
