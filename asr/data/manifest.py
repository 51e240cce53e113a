"""JSONL manifests: one utterance per line, ``{"audio", "text", "duration", "speaker"}``.

Manifests are the only way corpora reach training and evaluation, so reading one validates every
line up front: a missing file or an empty transcript found an hour into training wastes the hour.
Each problem names ``file:line``; with ``skip_invalid`` bad lines are dropped and reported instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asr.audio import audio_duration, load_audio
from asr.errors import AudioError, ManifestError

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("audio", "text")
SPLITS = ("", "train", "dev", "test")  # values of the optional 'split' key ("" = not given)


@dataclass(frozen=True)
class ManifestEntry:
    audio: str  # absolute path of the audio file
    text: str  # transcript as the corpus gives it; normalize_text() is applied at encode/score time
    duration: float  # seconds, from the file header
    speaker: str  # speaker id ("" when unknown); splits keep each speaker in one split
    split: str = ""  # "train" / "dev" / "test" when the corpus prescribes a speaker-disjoint split, else ""


@dataclass(frozen=True)
class ManifestProblem:
    path: Path
    line: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def read_manifest(path: str | Path, *, skip_invalid: bool = False, check_audio: bool = False) -> list[ManifestEntry]:
    """Entries of a manifest; the first invalid line raises ``ManifestError`` unless ``skip_invalid``.

    Relative audio paths are resolved against the manifest's folder. A missing ``duration`` is
    read from the audio header. ``check_audio`` decodes every file (slow, catches corrupt audio).
    """
    entries, problems = read_manifest_report(path, check_audio=check_audio, stop_at_first=not skip_invalid)
    if problems and not skip_invalid:
        raise ManifestError(f"{problems[0]}; fix or remove the line, or read with skip_invalid=True")
    return entries


def spread(entries: list[ManifestEntry], limit: int) -> list[ManifestEntry]:
    """At most ``limit`` entries spread evenly over the manifest (manifests are grouped by speaker, so
    the first ``limit`` lines would be a few speakers only); ``limit <= 0`` keeps them all."""
    if limit <= 0 or len(entries) <= limit:
        return entries
    step = len(entries) / limit
    return [entries[int(i * step)] for i in range(limit)]


def read_manifest_report(
    path: str | Path, *, check_audio: bool = False, stop_at_first: bool = False
) -> tuple[list[ManifestEntry], list[ManifestProblem]]:
    """Valid entries and the problems of every invalid line (each also logged as a warning)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; run `asr prepare` or check the path")
    entries: list[ManifestEntry] = []
    problems: list[ManifestProblem] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                entries.append(_parse_line(raw, path.parent, check_audio))
            except ManifestError as exc:
                problems.append(ManifestProblem(path, number, str(exc)))
                if stop_at_first:
                    break
    for problem in problems:
        logger.warning("skipping invalid manifest line %s", problem)
    return entries, problems


def _parse_line(raw: bytes, base: Path, check_audio: bool) -> ManifestEntry:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not valid UTF-8 (byte {exc.start}); re-save the manifest as UTF-8") from exc
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(record, dict):
        raise ManifestError(f"expected a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ManifestError(f"missing key(s) {', '.join(missing)}; every line needs 'audio' and 'text'")
    text, audio = record["text"], record["audio"]
    if not isinstance(text, str) or not text.strip():
        raise ManifestError("empty transcript ('text'); remove the line or add its transcript")
    if not isinstance(audio, str) or not audio:
        raise ManifestError("'audio' must be a non-empty path string")
    audio_path = Path(audio).expanduser()
    audio_path = audio_path if audio_path.is_absolute() else base / audio_path
    if not audio_path.is_file():
        raise ManifestError(f"audio file {audio_path} does not exist")
    try:
        if check_audio:
            load_audio(audio_path)
        duration = _duration(record, audio_path)
    except AudioError as exc:
        raise ManifestError(str(exc)) from exc
    speaker = record.get("speaker", "")
    split = record.get("split", "")
    if split not in SPLITS:
        raise ManifestError(f"'split' must be one of {', '.join(repr(s) for s in SPLITS)} (or absent), got {split!r}")
    return ManifestEntry(os.path.abspath(audio_path), text.strip(), duration, str(speaker), split)


def _duration(record: dict[str, Any], audio_path: Path) -> float:
    value = record.get("duration")
    if value is None:
        return audio_duration(audio_path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ManifestError(f"'duration' must be a non-negative number of seconds, got {value!r}")
    return float(value)


def write_manifest(path: str | Path, entries: Iterable[ManifestEntry], *, relative: bool = False) -> Path:
    """Write entries as JSONL (atomically, so a crash never leaves half a manifest).

    With ``relative`` the audio paths are written relative to the manifest's folder, for
    manifests that travel with their audio (like ``samples/``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for entry in entries:
                audio = os.path.relpath(entry.audio, base) if relative else entry.audio
                record = {
                    "audio": audio,
                    "text": entry.text,
                    "duration": round(entry.duration, 4),
                    "speaker": entry.speaker,
                }
                if entry.split:
                    record["split"] = entry.split
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
