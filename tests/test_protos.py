"""The committed generated code is what `protos/generate.py` produces from `asr_service.proto` now."""

from __future__ import annotations

from pathlib import Path

from protos.generate import ROOT, generate


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
