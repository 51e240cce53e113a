"""Message classes of the Riva ASR and Google Cloud Speech v1 APIs, from ``compat_pb2``'s descriptor set.

They live in a private descriptor pool rather than protobuf's default one, so the server needs
neither client package at run time, and a process that also imports ``riva.client`` or
``google.cloud.speech`` (the compat tests do) gets no duplicate-symbol clash. Messages from this
pool are wire-compatible with the clients' own: only the Python classes differ.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from protos.compat_pb2 import FILE_DESCRIPTOR_SET


@cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(FILE_DESCRIPTOR_SET).file:
        pool.Add(file)  # dependencies come first in the set
    return pool


@cache
def message_class(full_name: str) -> Any:
    """The class of e.g. ``"nvidia.riva.asr.RecognizeRequest"``; KeyError for a name not in the set."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(full_name))


def generic_handler(service: str, package: str, methods: dict[str, tuple[Any, str, str, bool]]) -> Any:
    """A gRPC handler serving ``service`` by method path, with no generated stub module.

    ``methods`` maps a method name to ``(behaviour, request type, response type, bidi streaming)``;
    type names are relative to ``package``.
    """
    import grpc

    handlers = {}
    for name, (behaviour, request, response, streaming) in methods.items():
        make = grpc.stream_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        handlers[name] = make(
            behaviour,
            request_deserializer=message_class(f"{package}.{request}").FromString,
            response_serializer=message_class(f"{package}.{response}").SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service, handlers)
