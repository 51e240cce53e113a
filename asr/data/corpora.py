"""Importers from corpora already on disk (never downloads) and the speaker-disjoint split.

Each importer turns a corpus in its published layout into :class:`ManifestEntry` rows with
absolute audio paths, the corpus's own transcript and a duration read from the audio header.
A row whose audio is missing or unreadable, or whose transcript is empty, is skipped with a
warning naming ``file:line`` (one bad row in someone else's corpus should not block an import);
finding nothing at all raises :class:`ManifestError`.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple, get_args

import numpy as np

from asr.audio import SUPPORTED_EXTENSIONS, audio_duration
from asr.data.manifest import ManifestEntry, read_manifest
from asr.errors import AudioError, ManifestError

logger = logging.getLogger(__name__)

CorpusKind = Literal[
    "librispeech", "common_voice", "ljspeech", "speech_commands", "an4", "arctic", "kaldi", "folder", "manifest"
]
CORPUS_KINDS: tuple[str, ...] = get_args(CorpusKind)

# "{speaker}_nohash_{take}.wav"; in the v0.02 test set's _unknown_ folder "{word}_{speaker}_nohash_{take}.wav.wav"
_SPEECH_COMMANDS_NAME = re.compile(
    r"^(?:(?P<word>[a-z]+)_)?(?P<speaker>[0-9a-f]+)_nohash_(?P<take>\d+)\.wav(?:\.wav)?$"
)
# AN4 transcription line: "<s> P L E A S A N T </s> (an251-fash-b)"; the id's middle part is the speaker.
_AN4_LINE = re.compile(r"^(?:<s>\s*)?(?P<text>.*?)\s*(?:</s>)?\s*\((?P<utt>[^()\s]+)\)$")
# CMU ARCTIC etc/arctic.data line: ( arctic_a0001 "Author of the danger trail, Philip Steels, etc." )
_ARCTIC_LINE = re.compile(r'^\(\s*(?P<utt>\S+)\s+"(?P<text>.*)"\s*\)$')
# Folder names of Kaldi data directories that name an official split.
_KALDI_SPLITS = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "test": "test"}


class Split(NamedTuple):
    train: list[ManifestEntry]
    dev: list[ManifestEntry]
    test: list[ManifestEntry]


def import_corpus(kind: str, root: str | Path) -> list[ManifestEntry]:
    """Entries of the corpus at ``root`` in layout ``kind`` (one of :data:`CORPUS_KINDS`)."""
    root = Path(root)
    if not root.exists():
        raise ManifestError(f"corpus folder {root} does not exist; check the path")
    if kind == "librispeech":
        entries = import_librispeech(root)
    elif kind == "common_voice":
        entries = import_common_voice(root)
    elif kind == "ljspeech":
        entries = import_ljspeech(root)
    elif kind == "speech_commands":
        entries = import_speech_commands(root)
    elif kind == "an4":
        entries = import_an4(root)
    elif kind == "arctic":
        entries = import_arctic(root)
    elif kind == "kaldi":
        entries = import_kaldi(root)
    elif kind == "folder":
        entries = import_folder(root)
    elif kind == "manifest":
        entries = import_manifest(root)
    else:
        raise ManifestError(f"unknown corpus kind {kind!r}; choose one of {', '.join(CORPUS_KINDS)}")
    logger.info("imported %d utterances (%.1f min) from %s corpus %s", len(entries), _minutes(entries), kind, root)
    return entries


def import_librispeech(root: Path) -> list[ManifestEntry]:
    """``{speaker}/{chapter}/{speaker}-{chapter}.trans.txt`` lines ``ID TEXT`` next to ``ID.flac``, at any depth."""
    entries = []
    for transcript in sorted(root.rglob("*.trans.txt")):
        for number, line in _numbered_lines(transcript):
            utt_id, _, text = line.partition(" ")
            audio = _find_audio(transcript.parent, utt_id)
            entry = _entry(audio, text, utt_id.split("-")[0], f"{transcript}:{number}")
            entries.extend(entry)
    return _nonempty(entries, root, "LibriSpeech transcripts (*.trans.txt with .flac audio)")


def import_common_voice(root: Path, *, tsv: str = "validated.tsv") -> list[ManifestEntry]:
    """``validated.tsv`` (columns client_id, path, sentence) with the audio in ``clips/``."""
    table = root / tsv
    if not table.is_file():
        raise ManifestError(f"{table} does not exist; point at a Common Voice language folder (with {tsv} and clips/)")
    entries = []
    with table.open(encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"client_id", "path", "sentence"} - set(rows.fieldnames or ())
        if missing:
            raise ManifestError(f"{table}: missing column(s) {', '.join(sorted(missing))}; is this a Common Voice tsv?")
        for number, row in enumerate(rows, start=2):
            entries.extend(_entry(root / "clips" / row["path"], row["sentence"], row["client_id"], f"{table}:{number}"))
    return _nonempty(entries, root, f"Common Voice clips listed in {tsv}")


def import_ljspeech(root: Path) -> list[ManifestEntry]:
    """``metadata.csv`` lines ``id|raw text|normalized text`` with ``wavs/{id}.wav``; one speaker, "LJ".

    The normalized column (numbers spelled as read) is preferred when present.
    """
    metadata = root / "metadata.csv"
    if not metadata.is_file():
        raise ManifestError(f"{metadata} does not exist; point at the LJSpeech folder (with metadata.csv and wavs/)")
    entries = []
    for number, line in _numbered_lines(metadata):
        fields = line.split("|")
        text = fields[2] if len(fields) > 2 and fields[2].strip() else fields[1] if len(fields) > 1 else ""
        entries.extend(_entry(root / "wavs" / f"{fields[0]}.wav", text, "LJ", f"{metadata}:{number}"))
    return _nonempty(entries, root, "LJSpeech utterances (metadata.csv with wavs/)")


def import_speech_commands(root: Path) -> list[ManifestEntry]:
    """Word folders ``{word}/{speaker}_nohash_{take}.wav`` at any depth; the text is the word.

    Folders starting with "_" hold no labelled speech (``_background_noise_``, ``_silence_``) and
    are skipped, except the v0.02 test set's ``_unknown_``, whose file names start with the word.
    """
    entries = []
    for audio in sorted(root.rglob("*.wav")):
        folders = audio.relative_to(root).parts[:-1]
        if not folders or any(p.startswith("_") and p != "_unknown_" for p in folders):
            continue
        match = _SPEECH_COMMANDS_NAME.match(audio.name)
        if match is None:
            logger.warning("skipping %s: not named {speaker}_nohash_{take}.wav", audio)
            continue
        word = match["word"] if folders[-1] == "_unknown_" else folders[-1]
        if word:
            entries.extend(_entry(audio, word, match["speaker"], str(audio)))
    return _nonempty(entries, root, "Speech Commands clips ({word}/{speaker}_nohash_{take}.wav)")


def import_an4(root: Path) -> list[ManifestEntry]:
    """CMU AN4: ``etc/an4_{train,test}.transcription`` with NIST SPHERE audio ``wav/{folder}/{speaker}/{id}.sph``.

    The official split comes with it (``split`` "train" / "test"; AN4's test speakers are not in
    train). Audio is found through ``etc/an4_*.fileids`` when present, else by id under ``wav/``.
    """
    etc = root / "etc"
    transcriptions = sorted(etc.glob("*.transcription")) if etc.is_dir() else []
    if not transcriptions:
        raise ManifestError(f"no etc/*.transcription under {root}; point at the AN4 folder (with etc/ and wav/)")
    audio_by_id = _an4_audio(root)
    entries = []
    for transcription in transcriptions:
        split = "test" if "test" in transcription.stem else "train"
        for number, line in _numbered_lines(transcription):
            match = _AN4_LINE.match(line)
            where = f"{transcription}:{number}"
            if match is None:
                logger.warning("skipping %s: not '<s> TEXT </s> (utterance-id)'", where)
                continue
            utt = match["utt"]
            audio = audio_by_id.get(utt, root / "wav" / f"{utt}.sph")
            speaker = utt.split("-")[1] if utt.count("-") >= 2 else audio.parent.name
            entries.extend(_entry(audio, match["text"], speaker, where, split))
    return _nonempty(entries, root, "AN4 utterances (etc/*.transcription with wav/**/*.sph)")


def _an4_audio(root: Path) -> dict[str, Path]:
    """Utterance id → SPHERE path, from the ``.fileids`` lists (``an4_clstk/fash/an251-fash-b``) or a search."""
    found: dict[str, Path] = {}
    for fileids in sorted((root / "etc").glob("*.fileids")):
        for _, line in _numbered_lines(fileids):
            found[Path(line).name] = root / "wav" / f"{line}.sph"
    if not found:
        found = {p.stem: p for p in sorted((root / "wav").rglob("*.sph"))}
    return found


def import_arctic(root: Path) -> list[ManifestEntry]:
    """A CMU ARCTIC voice folder: ``etc/arctic.data`` prompts with ``wav/{id}.wav``; one speaker.

    The speaker is taken from the folder name (``cmu_us_slt_arctic`` → ``slt``).
    """
    prompts = root / "etc" / "arctic.data"
    if not prompts.is_file():
        raise ManifestError(
            f"{prompts} does not exist; point at an ARCTIC voice folder (with etc/arctic.data and wav/)"
        )
    name = root.resolve().name
    speaker = name.split("_")[2] if name.startswith("cmu_") and name.count("_") >= 3 else name
    entries = []
    for number, line in _numbered_lines(prompts):
        match = _ARCTIC_LINE.match(line)
        if match is None:
            logger.warning("skipping %s:%d: not '( id \"text\" )'", prompts, number)
            continue
        entries.extend(_entry(root / "wav" / f"{match['utt']}.wav", match["text"], speaker, f"{prompts}:{number}"))
    return _nonempty(entries, root, "ARCTIC prompts (etc/arctic.data with wav/*.wav)")


def import_kaldi(root: Path) -> list[ManifestEntry]:
    """Kaldi data directories (``wav.scp``, ``text``, ``utt2spk``): ``root`` itself or any folder below it.

    A directory named train, dev (valid) or test sets the entries' ``split``. ``wav.scp`` lines
    are ``utt path``; for piped commands (``utt sph2pipe -f wav a.sph |``) the first argument
    that is an existing audio file is used, and nothing is executed. Relative paths are resolved
    against the data directory and then each folder above it, since recipes keep them relative to
    their top folder. ``segments`` (utterances cut from longer recordings) are refused.
    """
    data_dirs = sorted({p.parent for p in root.rglob("wav.scp")} | ({root} if (root / "wav.scp").is_file() else set()))
    if not data_dirs:
        raise ManifestError(f"no wav.scp under {root}; point at a Kaldi data directory (wav.scp, text, utt2spk)")
    entries = []
    for data_dir in data_dirs:
        if (data_dir / "segments").is_file():
            raise ManifestError(
                f"{data_dir}/segments: utterances cut from longer recordings are not supported; "
                "extract them to files first (e.g. Kaldi's extract-segments) and write a wav.scp for those"
            )
        if not (data_dir / "text").is_file():
            logger.warning("skipping Kaldi data directory %s: it has no text file", data_dir)
            continue
        entries.extend(_kaldi_entries(data_dir, root))
    return _nonempty(entries, root, "Kaldi utterances (wav.scp + text)")


def _kaldi_entries(data_dir: Path, root: Path) -> list[ManifestEntry]:
    top = root.resolve().parent
    bases = [data_dir, *(p for p in data_dir.resolve().parents if p == top or top in p.parents)]
    audio = {}
    for number, line in _numbered_lines(data_dir / "wav.scp"):
        utt, _, rest = _split_kaldi_line(line)
        path = _kaldi_audio_path(rest.split(), bases)
        if path is None:
            logger.warning("skipping %s/wav.scp:%d: no existing audio file in %r", data_dir, number, rest)
        else:
            audio[utt] = path
    speakers = {}
    if (data_dir / "utt2spk").is_file():
        speakers = {
            utt: spk
            for utt, _, spk in map(_split_kaldi_line, (line for _, line in _numbered_lines(data_dir / "utt2spk")))
        }
    split = _KALDI_SPLITS.get(data_dir.name.lower(), "")
    entries = []
    for number, line in _numbered_lines(data_dir / "text"):
        utt, _, text = _split_kaldi_line(line)
        if utt not in audio:
            logger.warning("skipping %s/text:%d: utterance %s is not in wav.scp", data_dir, number, utt)
            continue
        entries.extend(_entry(audio[utt], text, speakers.get(utt, utt), f"{data_dir}/text:{number}", split))
    return entries


def _split_kaldi_line(line: str) -> tuple[str, str, str]:
    """``"key<spaces or tabs>rest"`` → ``(key, " ", rest)``, like ``str.partition`` on any whitespace."""
    key, *rest = line.split(maxsplit=1)
    return key, " ", rest[0] if rest else ""


def _kaldi_audio_path(words: list[str], bases: list[Path]) -> Path | None:
    for word in words:
        if Path(word).suffix.lower() not in SUPPORTED_EXTENSIONS:
            continue
        candidates = [Path(word)] if Path(word).is_absolute() else [base / word for base in bases]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
    return None


def import_folder(root: Path) -> list[ManifestEntry]:
    """Audio files (wav/flac/ogg/mp3) with a same-name ``.txt`` transcript, at any depth.

    The speaker is the audio's folder relative to ``root`` ("" for files directly in ``root``),
    so keep one folder per speaker to get speaker-disjoint splits.
    """
    entries = []
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in SUPPORTED_EXTENSIONS and p.is_file()):
        transcript = audio.with_suffix(".txt")
        if not transcript.is_file():
            logger.warning("skipping %s: no transcript %s", audio, transcript.name)
            continue
        text = transcript.read_text(encoding="utf-8", errors="replace")
        speaker = audio.parent.relative_to(root).as_posix() if audio.parent != root else ""
        entries.extend(_entry(audio, text, speaker, str(transcript)))
    return _nonempty(entries, root, "audio files with same-name .txt transcripts")


def import_manifest(root: Path) -> list[ManifestEntry]:
    """A corpus folder shipping ``manifest.jsonl`` (like /work/shared/data/*), or a manifest file itself."""
    manifest = root / "manifest.jsonl" if root.is_dir() else root
    return read_manifest(manifest, skip_invalid=True)


def split_by_speaker(
    entries: Sequence[ManifestEntry], dev_fraction: float, test_fraction: float, seed: int = 0
) -> Split:
    """Train/dev/test with no speaker in two splits; the same inputs always give the same split.

    Speakers are shuffled with ``seed`` and given whole to test, then dev, until each holds about
    its fraction of the utterances. At least one speaker always stays in train, so a one-speaker
    corpus is all train (a warning says so).
    """
    if not (0 <= dev_fraction < 1 and 0 <= test_fraction < 1 and dev_fraction + test_fraction < 1):
        raise ValueError(f"fractions must be in [0, 1) and sum below 1, got dev={dev_fraction} test={test_fraction}")
    by_speaker: dict[str, list[ManifestEntry]] = {}
    for entry in entries:
        by_speaker.setdefault(entry.speaker, []).append(entry)
    speakers = sorted(by_speaker)
    order = [speakers[i] for i in np.random.default_rng(seed).permutation(len(speakers))]
    held_out: list[list[ManifestEntry]] = []
    for fraction in (test_fraction, dev_fraction):
        target, taken = fraction * len(entries), list[ManifestEntry]()
        while order[1:] and len(taken) < target:
            taken.extend(by_speaker[order.pop(0)])
        held_out.append(taken)
    if len(speakers) < 3 and (dev_fraction or test_fraction):
        logger.warning("only %d speaker(s): a speaker-disjoint split leaves some splits empty", len(speakers))
    remaining = set(order)
    train = [e for e in entries if e.speaker in remaining]
    return Split(train=train, dev=held_out[1], test=held_out[0])


def _numbered_lines(path: Path) -> Iterable[tuple[int, str]]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number, line.strip()


def _find_audio(folder: Path, utt_id: str) -> Path:
    for suffix in (".flac", ".wav"):
        if (folder / f"{utt_id}{suffix}").is_file():
            return folder / f"{utt_id}{suffix}"
    return folder / f"{utt_id}.flac"


def _entry(audio: Path, text: str, speaker: str, where: str, split: str = "") -> list[ManifestEntry]:
    """A one-entry list, or an empty list (and a warning) when the row is unusable."""
    text = " ".join(text.split())
    if not text:
        logger.warning("skipping %s: empty transcript", where)
        return []
    try:
        duration = audio_duration(audio)
    except AudioError as exc:
        logger.warning("skipping %s: %s", where, exc)
        return []
    return [ManifestEntry(os.path.abspath(audio), text, duration, speaker, split)]


def _nonempty(entries: list[ManifestEntry], root: Path, what: str) -> list[ManifestEntry]:
    if not entries:
        raise ManifestError(f"no usable {what} found under {root}; check the folder and the corpus kind")
    return entries


def _minutes(entries: Iterable[ManifestEntry]) -> float:
    return sum(e.duration for e in entries) / 60
