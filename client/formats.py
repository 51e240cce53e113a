"""Transcripts as text, JSON, SubRip (SRT) and WebVTT, for files written by ``asr-client transcribe``.

Subtitle cues group consecutive words (from the word times the server returns) and break at a
pause, at a length a viewer can read, or at a maximum duration. A transcript without word times
becomes one cue spanning the whole audio, so every format works with every server setting.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from client.types import Transcript, Word

MAX_CUE_CHARS = 42  # the usual subtitle line limit (BBC/Netflix guidelines)
MAX_CUE_S = 7.0  # longer cues are hard to read along with
PAUSE_S = 0.8  # a silence this long between words starts a new cue


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def to_dict(transcript: Transcript) -> dict[str, Any]:
    """A JSON-ready dict: best text, duration, words, all alternatives and the request id."""

    def words(ws: tuple[Word, ...]) -> list[dict[str, Any]]:
        return [
            {"word": w.word, "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3),
             "confidence": round(w.confidence, 4)}
            for w in ws
        ]

    return {
        "text": transcript.text,
        "duration_s": round(transcript.duration_s, 3),
        "words": words(transcript.words),
        "alternatives": [
            {"text": a.text, "confidence": round(a.confidence, 4), "words": words(a.words)}
            for a in transcript.alternatives
        ],
        "request_id": transcript.request_id,
    }


def cues(transcript: Transcript) -> list[Cue]:
    """Consecutive words grouped into readable cues, with non-decreasing, non-overlapping times."""
    if not transcript.words:
        text = transcript.text.strip()
        return [Cue(0.0, max(transcript.duration_s, 0.001), text)] if text else []
    groups: list[list[Word]] = [[]]
    for word in transcript.words:
        group = groups[-1]
        if group and (
            word.start_s - group[-1].end_s >= PAUSE_S
            or len(" ".join(w.word for w in group)) + 1 + len(word.word) > MAX_CUE_CHARS
            or word.end_s - group[0].start_s > MAX_CUE_S
        ):
            groups.append([])
        groups[-1].append(word)
    result: list[Cue] = []
    for group in groups:
        start = max(group[0].start_s, result[-1].end_s if result else 0.0)
        end = max(group[-1].end_s, start + 0.001)  # a zero-length cue is invalid in some players
        result.append(Cue(start, end, " ".join(w.word for w in group)))
    return result


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(max(seconds, 0.0) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(transcript: Transcript) -> str:
    blocks = [
        f"{i}\n{_timestamp(c.start_s, ',')} --> {_timestamp(c.end_s, ',')}\n{c.text}\n"
        for i, c in enumerate(cues(transcript), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = [f"{_timestamp(c.start_s, '.')} --> {_timestamp(c.end_s, '.')}\n{c.text}\n" for c in cues(transcript)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_txt(transcript: Transcript) -> str:
    return transcript.text + "\n"


def to_json(transcript: Transcript) -> str:
    return json.dumps(to_dict(transcript), ensure_ascii=False, indent=2) + "\n"


FORMATTERS: dict[str, Callable[[Transcript], str]] = {
    "txt": to_txt,
    "json": to_json,
    "srt": to_srt,
    "vtt": to_vtt,
}
