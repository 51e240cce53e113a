"""Manifest reading and validation: every bad line is reported as file:line with the problem."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.data.manifest import ManifestEntry, read_manifest, read_manifest_report, write_manifest
from asr.errors import ManifestError


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for name, seconds in (("a.wav", 0.5), ("b.wav", 0.25)):
        sf.write(tmp_path / name, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
    return tmp_path


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def good(audio: str = "a.wav", text: str = "hello", **extra: object) -> str:
    return json.dumps({"audio": audio, "text": text, **extra})


def test_shipped_samples_manifest_reads_with_absolute_paths(samples) -> None:
    entries = read_manifest(samples.manifest, check_audio=True)
    assert len(entries) == 15
    assert all(Path(e.audio).is_absolute() and Path(e.audio).is_file() for e in entries)
    assert [e.text for e in entries] == samples.texts
    assert {e.speaker for e in entries} >= {"lucas", "1988"}


def test_relative_paths_resolve_against_the_manifest_folder(corpus: Path) -> None:
    manifest = write_lines(corpus / "m.jsonl", [good(speaker="s1", duration=0.5)])
    (entry,) = read_manifest(manifest)
    assert entry == ManifestEntry(str(corpus / "a.wav"), "hello", 0.5, "s1")


def test_missing_duration_is_read_from_the_header_and_speaker_defaults_to_empty(corpus: Path) -> None:
    (entry,) = read_manifest(write_lines(corpus / "m.jsonl", [good("b.wav")]))
    assert entry.duration == pytest.approx(0.25)
    assert entry.speaker == ""


def test_missing_audio_file_reports_the_line_number(corpus: Path) -> None:
    manifest = write_lines(corpus / "m.jsonl", [good(), good(), good("gone.wav")])
    with pytest.raises(ManifestError, match=r"m\.jsonl:3: audio file .*gone\.wav does not exist"):
        read_manifest(manifest)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"audio": "a.wav"}), "missing key"),
        (json.dumps(["a.wav", "hi"]), "expected a JSON object"),
        (good(text="   "), "empty transcript"),
        (good(duration=-1), "non-negative number"),
        (b'{"audio": "a.wav", "text": "caf\xe9"}', "not valid UTF-8"),
    ],
)
def test_each_kind_of_bad_line_is_named(corpus: Path, line: str | bytes, problem: str) -> None:
    manifest = write_lines(corpus / "m.jsonl", [good(), line])
    with pytest.raises(ManifestError, match=rf"m\.jsonl:2: .*{problem}"):
        read_manifest(manifest)


def test_unreadable_audio_is_caught_only_with_check_audio(corpus: Path) -> None:
    (corpus / "bad.wav").write_bytes(np.random.default_rng(1).bytes(3000))
    manifest = write_lines(corpus / "m.jsonl", [good("bad.wav", duration=1.0)])
    assert len(read_manifest(manifest)) == 1
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: .*bad\.wav"):
        read_manifest(manifest, check_audio=True)


def test_skip_invalid_keeps_good_lines_and_reports_bad_ones(corpus: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = write_lines(corpus / "m.jsonl", [good(), "oops", "", good("b.wav"), good("gone.wav")])
    with caplog.at_level(logging.WARNING):
        entries = read_manifest(manifest, skip_invalid=True)
    assert [Path(e.audio).name for e in entries] == ["a.wav", "b.wav"]
    assert "m.jsonl:2" in caplog.text and "m.jsonl:5" in caplog.text
    _, problems = read_manifest_report(manifest)
    assert [p.line for p in problems] == [2, 5]
    assert str(problems[1]).startswith(f"{manifest}:5: audio file")


def test_missing_manifest_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist; run `asr prepare`"):
        read_manifest(tmp_path / "absent.jsonl")


def test_write_then_read_round_trips(corpus: Path) -> None:
    entries = [
        ManifestEntry(str(corpus / "a.wav"), "héllo wörld", 0.5, "s1"),
        ManifestEntry(str(corpus / "b.wav"), "two", 0.25, "s2"),
    ]
    out = corpus / "out" / "m.jsonl"
    write_manifest(out, entries)
    assert read_manifest(out) == entries
    assert "héllo" in out.read_text(encoding="utf-8")


def test_relative_manifest_travels_with_its_audio(corpus: Path) -> None:
    entries = [ManifestEntry(str(corpus / "a.wav"), "hello", 0.5, "s1")]
    write_manifest(corpus / "m.jsonl", entries, relative=True)
    assert json.loads((corpus / "m.jsonl").read_text())["audio"] == "a.wav"
    moved = corpus.parent / "moved"
    os.rename(corpus, moved)
    assert read_manifest(moved / "m.jsonl")[0].audio == str(moved / "a.wav")
