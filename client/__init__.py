"""Python client for the asr.v1 speech recognition service (no torch, no model code)."""

from client.aio import AsyncAsrClient
from client.client import AsrClient, RecognitionError, TlsConfig
from client.types import (
    Alternative,
    ModelInfo,
    RecognitionOptions,
    StreamingUpdate,
    StreamOptions,
    Transcript,
    Word,
)

__all__ = [
    "Alternative",
    "AsrClient",
    "AsyncAsrClient",
    "ModelInfo",
    "RecognitionError",
    "RecognitionOptions",
    "StreamOptions",
    "StreamingUpdate",
    "TlsConfig",
    "Transcript",
    "Word",
]
