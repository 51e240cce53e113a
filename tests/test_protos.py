"""The committed generated code is what `protos/generate.py` produces from `asr_service.proto` now."""

from __future__ import annotations

from pathlib import Path

import pytest

from protos.generate import ROOT, compat_descriptor_set, generate


def test_generated_code_is_up_to_date_with_the_proto(tmp_path: Path):
    stale = [
        path.name
        for path in generate(tmp_path)
        if path.read_text() != (ROOT / "protos" / path.name).read_text()
    ]
    assert not stale, f"{stale} are out of date with asr_service.proto; run `python protos/generate.py`"


def test_generated_modules_import_as_a_package():
    from protos import asr_service_pb2, asr_service_pb2_grpc

    assert asr_service_pb2.DESCRIPTOR.package == "asr.v1"
    assert hasattr(asr_service_pb2_grpc, "RecognizerStub")


def test_compat_descriptor_set_is_up_to_date_with_the_client_packages():
    pytest.importorskip("riva.client")
    pytest.importorskip("google.cloud.speech")
    from protos.compat_pb2 import FILE_DESCRIPTOR_SET

    stale = "protos/compat_pb2.py is stale; run `python protos/generate.py`"
    assert compat_descriptor_set() == FILE_DESCRIPTOR_SET, stale


def test_compat_messages_build_from_a_private_pool():
    from protos.compat import message_class

    assert message_class("nvidia.riva.asr.RecognizeRequest").DESCRIPTOR.fields_by_name["audio"].number == 2
    assert message_class("google.cloud.speech.v1.StreamingRecognizeRequest").DESCRIPTOR.oneofs[0].name == (
        "streaming_request"
    )
