"""Word and character error rates of a recognizer on a manifest, with per-utterance rows.

Used by validation during training and by ``asr eval``; scoring normalises references and
hypotheses with the same :func:`normalize_text` that builds training targets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jiwer

from asr.config import SearchConfig
from asr.data.manifest import ManifestEntry
from asr.inference import Recognizer
from asr.tokenizer import normalize_text


@dataclass(frozen=True)
class UtteranceRow:
    audio: str
    reference: str
    hypothesis: str
    errors: int  # word edit distance
    words: int  # reference words


@dataclass
class Report:
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int
    utterances: int
    audio_seconds: float
    decode_seconds: float
    rows: list[UtteranceRow] = field(default_factory=list)

    @property
    def real_time_factor(self) -> float:
        """Decode time / audio time (lower is faster; < 1 is faster than real time)."""
        return self.decode_seconds / self.audio_seconds if self.audio_seconds else 0.0

    def summary(self) -> str:
        return (
            f"WER {100 * self.wer:.2f}% (S={self.substitutions} D={self.deletions} I={self.insertions} "
            f"N={self.reference_words}) CER {100 * self.cer:.2f}% over {self.utterances} utterances, "
            f"{self.audio_seconds:.1f} s audio, RTF {self.real_time_factor:.4f}"
        )

    def write_rows(self, path: str | Path) -> None:
        """One JSON object per utterance, worst first, for error analysis."""
        with open(path, "w", encoding="utf-8") as f:
            for row in sorted(self.rows, key=lambda r: -r.errors):
                f.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")


def score(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[float, float, int, int, int, int]:
    """(wer, cer, subs, dels, ins, ref_words) after normalisation; empty references count as zero words."""
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    if not pairs:
        return 0.0, 0.0, 0, 0, 0, 0
    r_list, h_list = [p[0] for p in pairs], [p[1] for p in pairs]
    words = jiwer.process_words(r_list, h_list)
    chars = jiwer.process_characters(r_list, h_list)
    n_words = words.hits + words.substitutions + words.deletions
    return words.wer, chars.cer, words.substitutions, words.deletions, words.insertions, n_words


def evaluate(
    recognizer: Recognizer,
    entries: Sequence[ManifestEntry],
    search_config: SearchConfig | None = None,
    *,
    batch_seconds: float = 120.0,
) -> Report:
    start = time.perf_counter()
    transcripts = recognizer.transcribe_files([e.audio for e in entries], search_config, batch_seconds=batch_seconds)
    elapsed = time.perf_counter() - start
    hyps = [t.text for t in transcripts]
    refs = [e.text for e in entries]
    wer, cer, subs, dels, ins, n_words = score(refs, hyps)
    rows = []
    for entry, hyp in zip(entries, hyps):
        ref_n, hyp_n = normalize_text(entry.text), normalize_text(hyp)
        if ref_n:
            out = jiwer.process_words(ref_n, hyp_n)
            errors = out.substitutions + out.deletions + out.insertions
        else:
            errors = len(hyp_n.split())
        rows.append(UtteranceRow(entry.audio, ref_n, hyp_n, errors, len(ref_n.split())))
    return Report(
        wer=wer,
        cer=cer,
        substitutions=subs,
        deletions=dels,
        insertions=ins,
        reference_words=n_words,
        utterances=len(entries),
        audio_seconds=sum(t.duration_s for t in transcripts),
        decode_seconds=elapsed,
        rows=rows,
    )
