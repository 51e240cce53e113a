"""WER and real-time factor of every search method, CTC-only against joint-trained, on held-out speakers.

    .venv/bin/python -m benchmarks.bench_decoding [--ctc-model runs/shared_ctc/model.pt]
        [--joint-model runs/shared_joint/model.pt] [--manifest data/shared/test_fsdd.jsonl ...]
        [--dev-manifest ...] [--lm-train data/shared/train.jsonl] [--limit N] [--beam 8]
        [--repeats 3] [--threads 1] [--device cpu] [--no-write]

Each test utterance is encoded ONCE per model (``Recognizer.encode`` + ``ctc_log_probs``, in
duration-sorted batches); then every method runs ``asr.decoding.search.search`` on the stored
log-probs / encoder output, batch by batch as ``Recognizer.transcribe_batch`` does, so the
numbers are the ones users get. Search RTF = median search seconds / audio seconds; end-to-end
RTF adds the encode time (features + CMVN + encoder + CTC head, one pass after a warm-up batch).

- ``+ LM``: a word n-gram estimated (``build_arpa``) from the TRAINING manifest's transcripts,
  its weight chosen on the dev manifests over a small grid, then applied once to test.
- ``+ boost``: the ten digit words boosted by a fixed bonus. The test set is closed-vocabulary
  (digits and command words), so this row shows the mechanism works, not open-domain gains.
- pyctcdecode (optional; not a project dependency) decodes the same log-probs with the same beam
  width and no LM; our prefix beam is also run at its token pruning (``token_min_logp`` = -5).

Writes the ``decoding`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr.audio import load_audio
from asr.config import BoostPhrase, LMConfig, SearchConfig
from asr.data.manifest import ManifestEntry, read_manifest
from asr.decoding.hypothesis import NBest
from asr.decoding.search import search
from asr.inference import Recognizer, pad_waveforms
from asr.tokenizer import WORD_BOUNDARY, normalize_text
from asr.training.evaluate import score
from asr.training.ngram import build_arpa
from benchmarks.report import machine_line, table, update_section

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEST = ("data/shared/test_fsdd.jsonl", "data/shared/test_speech_commands.jsonl")
DEFAULT_DEV = ("data/shared/dev_fsdd.jsonl", "data/shared/dev_speech_commands.jsonl")
TRAIN_COMMANDS = {
    "ctc": "asr train --config asr/configs/shared_bilstm_ctc.yaml --out runs/shared_ctc",
    "joint": "asr train --config asr/configs/shared_bilstm_joint.yaml --out runs/shared_joint",
}
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
BOOST = 1.5  # log-score bonus per token: enough to tip close calls, small enough not to force digits
# Dev grid for the word LM: (lm_weight, length_bonus). Test utterances are one word, so a length
# bonus mostly trades deletions for insertions; two values are enough to see which way it goes.
LM_GRID = tuple((w, b) for w in (0.1, 0.3, 0.6, 1.0) for b in (0.0, 0.5))
PYCTC_TOKEN_MIN_LOGP = -5.0  # pyctcdecode's default per-frame token pruning
PYCTC_BEAM_PRUNE_LOGP = -10.0  # pyctcdecode's default beam pruning (we have no equivalent)
ENCODE_BATCH_SECONDS = 64.0  # audio seconds per encoder batch, as the shared recipes train with


Decode = Callable[[Sequence[int] | None], list[str]]  # decode all stored batches, or those listed


@dataclass
class Encoded:
    """One model's stored outputs for a list of utterances, in duration-sorted batches."""

    batches: list[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    # (utterance indices, log_probs (B,T',V) cpu, lens (B,) cpu, enc (B,T',D) model device, enc_lens (B,))
    encode_seconds: float
    audio_seconds: float


@dataclass
class Row:
    model: str
    method: str
    texts: list[str]
    search_seconds: float
    note: str = ""


def _fail(message: str) -> None:
    print(f"bench_decoding: {message}", file=sys.stderr)
    raise SystemExit(2)


def _check_model(path: Path, role: str) -> None:
    if path.is_file():
        return
    ckpts = sorted((path.parent / "checkpoints").glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    hint = f"; meanwhile pass a checkpoint, e.g. --{role}-model {ckpts[-1]}" if ckpts else ""
    _fail(f"{role} model {path} does not exist: train it with `{TRAIN_COMMANDS[role]}`{hint}")


def _subset(entries: list[ManifestEntry], limit: int) -> list[ManifestEntry]:
    """At most ``limit`` entries spread evenly over the manifest (manifests are grouped by speaker)."""
    if limit <= 0 or len(entries) <= limit:
        return entries
    step = len(entries) / limit
    return [entries[int(i * step)] for i in range(limit)]


def _read(paths: Sequence[str], limit: int) -> list[tuple[str, list[ManifestEntry]]]:
    sets = []
    for p in paths:
        if not Path(p).is_file():
            _fail(f"manifest {p} does not exist: run `asr prepare shared /work/shared/data --out data/shared`")
        sets.append((Path(p).stem, _subset(read_manifest(p), limit)))
    return sets


def encode_all(recognizer: Recognizer, waves: list[np.ndarray]) -> Encoded:
    """Encode every waveform once; the timed pass follows one untimed warm-up batch."""
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    groups: list[list[int]] = [[]]
    for i in order:
        if groups[-1] and len(waves[i]) * (len(groups[-1]) + 1) / recognizer.sample_rate > ENCODE_BATCH_SECONDS:
            groups.append([])
        groups[-1].append(i)

    def run(group: list[int]) -> tuple[torch.Tensor, ...]:
        w, wl = pad_waveforms([waves[i] for i in group])
        with torch.inference_mode():
            enc, enc_lens = recognizer.encode(w, wl)
            log_probs = recognizer.model.ctc_log_probs(enc).float().cpu()
        return log_probs, enc_lens.cpu(), enc, enc_lens

    run(groups[-1])  # warm-up on the longest batch (allocations, kernel selection)
    batches = []
    start = time.perf_counter()
    for group in groups:
        log_probs, lens, enc, enc_lens = run(group)
        batches.append((group, log_probs, lens, enc, enc_lens))
    if recognizer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return Encoded(batches, seconds, sum(len(w) for w in waves) / recognizer.sample_rate)


def run_search(recognizer: Recognizer, encoded: Encoded, cfg: SearchConfig, lm_path: str = "") -> Decode:
    """A closure decoding the stored batches (all, or only those at ``batch_ids``) with ``cfg``."""
    needs_decoder = cfg.method in ("attention_beam", "joint", "rescoring")
    lm = recognizer.lm(lm_path) if cfg.lm_weight != 0.0 else None
    boost = recognizer.boost_ids(cfg)
    n = sum(len(b[0]) for b in encoded.batches)

    def decode(batch_ids: Sequence[int] | None = None) -> list[str]:
        texts = [""] * n
        chosen = range(len(encoded.batches)) if batch_ids is None else batch_ids
        for k in chosen:
            indices, log_probs, lens, enc, enc_lens = encoded.batches[k]
            with torch.inference_mode():
                nbests: list[NBest] = search(
                    log_probs,
                    lens,
                    cfg,
                    pieces=recognizer.pieces,
                    decoder=recognizer.model.decoder if needs_decoder else None,
                    enc=enc if needs_decoder else None,
                    enc_lens=enc_lens if needs_decoder else None,
                    lm=lm,
                    boost=boost,
                )
            for i, nbest in zip(indices, nbests):
                texts[i] = recognizer.tokenizer.decode(nbest.best.tokens)
        return texts

    return decode


def timed(decoders: Sequence[Decode], repeats: int) -> list[tuple[float, list[str]]]:
    """Median seconds of a full decoding pass per decoder, and its texts.

    Each decoder is warmed up on the first batch; then the timed passes go round-robin (all
    decoders once, ``repeats`` times), so load from other processes drifts over every method alike.
    """
    for decode in decoders:
        decode([0])
    times: list[list[float]] = [[] for _ in decoders]
    texts: list[list[str]] = [[] for _ in decoders]
    for _ in range(repeats):
        for k, decode in enumerate(decoders):
            start = time.perf_counter()
            texts[k] = decode(None)
            times[k].append(time.perf_counter() - start)
    return [(statistics.median(t), x) for t, x in zip(times, texts)]


def tune_lm(
    recognizer: Recognizer, dev: Encoded, refs: list[str], base: SearchConfig, lm_path: str
) -> tuple[float, float, float]:
    """(lm_weight, length_bonus, dev WER) minimising dev WER over ``LM_GRID``; ties keep the smaller weight."""
    best = (0.0, 0.0, score(refs, run_search(recognizer, dev, base)(None))[0])
    for weight, bonus in LM_GRID:
        cfg = dataclasses.replace(base, lm_path=lm_path, lm_weight=weight, length_bonus=bonus)
        wer = score(refs, run_search(recognizer, dev, cfg, lm_path)(None))[0]
        if wer < best[2] - 1e-12:
            best = (weight, bonus, wer)
    return best


def pyctc_labels(pieces: Sequence[str]) -> list[str]:
    """Our pieces as pyctcdecode labels: blank "", "▁" → " ", specials → unique non-word placeholders."""
    bpe = any(p.startswith(WORD_BOUNDARY) and p != WORD_BOUNDARY for p in pieces)
    placeholders = iter("\u2047\u2048\u2049\u203c")  # ⁇ ⁈ ⁉ ‼: removed by normalize_text
    labels = []
    for i, p in enumerate(pieces):
        if i == 0:
            labels.append("")
        elif p.startswith("<") and p.endswith(">"):
            labels.append(next(placeholders))
        elif p == WORD_BOUNDARY and not bpe:
            labels.append(" ")
        else:
            labels.append(p)
    return labels


def pyctcdecode_decoder(pieces: Sequence[str]) -> tuple[Any, str]:
    """(decoder or None, note) — pyctcdecode is optional and never a project dependency."""
    try:
        import pyctcdecode  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None, "pyctcdecode is not installed (`pip install pyctcdecode`): its rows are skipped"
    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)  # "kenlm not installed" is expected: no LM
    version = getattr(pyctcdecode, "__version__", "")
    return pyctcdecode.build_ctcdecoder(pyctc_labels(pieces)), f"pyctcdecode {version}".strip()


def bench_model(
    name: str,
    recognizer: Recognizer,
    test: Encoded,
    dev: Encoded,
    dev_refs: list[str],
    lm_path: str,
    args: argparse.Namespace,
) -> tuple[list[Row], str]:
    """Every applicable method on one model's stored outputs; returns rows and the LM tuning note."""
    base = recognizer.with_search(
        method="ctc_greedy", beam_size=args.beam, nbest=1, lm_path="", lm_weight=0.0, length_bonus=0.0,
        boost_phrases=(),
    )  # fmt: skip
    beam = dataclasses.replace(base, method="ctc_prefix_beam")
    weight, bonus, dev_wer = tune_lm(recognizer, dev, dev_refs, beam, lm_path)
    lm_note = f"{name}: lm_weight {weight:g}, length_bonus {bonus:g} (dev WER {100 * dev_wer:.2f} %)"
    pyctc_prune = dataclasses.replace(beam, prune_threshold=math.exp(PYCTC_TOKEN_MIN_LOGP))
    boost_phrases = tuple(BoostPhrase(d, BOOST) for d in DIGITS)
    methods: list[tuple[str, SearchConfig, str, str]] = [
        ("ctc_greedy", base, "", ""),
        ("ctc_prefix_beam", beam, "", f"prune {beam.prune_threshold:g} (default)"),
        ("ctc_prefix_beam", pyctc_prune, "", "prune e^-5 (= pyctcdecode token_min_logp)"),
        (
            "ctc_prefix_beam + LM",
            dataclasses.replace(beam, lm_path=lm_path, lm_weight=weight, length_bonus=bonus),
            lm_path,
            f"{LMConfig().order}-gram, weight {weight:g}, bonus {bonus:g} (dev-tuned)",
        ),
        ("ctc_prefix_beam + boost", dataclasses.replace(beam, boost_phrases=boost_phrases), "", f"digits +{BOOST:g}"),
    ]
    if recognizer.model.decoder is not None:
        for method in ("attention_beam", "joint", "rescoring"):
            cfg = dataclasses.replace(base, method=method)
            note = "" if method == "attention_beam" else f"ctc_weight {cfg.ctc_weight:g}"
            methods.append((method, cfg, "", note))
    jobs: list[tuple[str, str, Decode]] = [
        (method, note, run_search(recognizer, test, cfg, path)) for method, cfg, path, note in methods
    ]
    decoder, pyctc_note = pyctcdecode_decoder(recognizer.pieces)
    if decoder is not None:
        arrays = [
            (indices, [log_probs[b, : int(lens[b])].numpy() for b in range(len(indices))])
            for indices, log_probs, lens, _, _ in test.batches
        ]
        n = sum(len(b[0]) for b in test.batches)

        def decode_pyctc(batch_ids: Sequence[int] | None = None) -> list[str]:
            texts = [""] * n
            for k in range(len(arrays)) if batch_ids is None else batch_ids:
                for i, lp in zip(*arrays[k]):
                    texts[i] = decoder.decode(
                        lp,
                        beam_width=args.beam,
                        token_min_logp=PYCTC_TOKEN_MIN_LOGP,
                        beam_prune_logp=PYCTC_BEAM_PRUNE_LOGP,
                    )
            return texts

        jobs.append(("pyctcdecode", f"{pyctc_note}, no LM, default pruning", decode_pyctc))
    rows = []
    for (method, note, _), (seconds, texts) in zip(jobs, timed([job[2] for job in jobs], args.repeats)):
        rows.append(Row(name, method, texts, seconds, note))
        print(f"  {name:5s} {method:24s} {seconds:8.3f} s  {note}", flush=True)
    if decoder is None:
        rows.append(Row(name, "pyctcdecode", [], float("nan"), pyctc_note))
    return rows, lm_note


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctc-model", default="runs/shared_ctc/model.pt")
    parser.add_argument("--joint-model", default="runs/shared_joint/model.pt")
    parser.add_argument("--manifest", action="append", help="test manifest (repeatable); default: shared test sets")
    parser.add_argument("--dev-manifest", action="append", help="LM-weight tuning manifest; default: shared dev")
    parser.add_argument("--lm-train", default="data/shared/train.jsonl", help="training manifest (or text) for the LM")
    parser.add_argument("--limit", type=int, default=0, help="at most N utterances per manifest (0 = all)")
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per method (median)")
    parser.add_argument("--device", default="cpu", help="encoder device (search always runs on CPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default; 1 on a shared box)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    models = {"ctc": Path(args.ctc_model), "joint": Path(args.joint_model)}
    for role, path in models.items():
        _check_model(path, role)
    test_paths = args.manifest or list(DEFAULT_TEST)
    dev_paths = args.dev_manifest or list(DEFAULT_DEV)
    not_test = {Path(args.lm_train).resolve(), *(Path(p).resolve() for p in dev_paths)}
    if {Path(p).resolve() for p in test_paths} & not_test:
        _fail("the LM training text and the dev manifests must not be test manifests")
    test_sets, dev_sets = _read(test_paths, args.limit), _read(dev_paths, args.limit)
    test = [e for _, entries in test_sets for e in entries]
    dev = [e for _, entries in dev_sets for e in entries]
    refs, dev_refs = [e.text for e in test], [e.text for e in dev]

    lm_source = Path(args.lm_train)
    if not lm_source.is_file():
        _fail(f"LM training text {lm_source} does not exist")
    if lm_source.suffix == ".jsonl":
        train = read_manifest(lm_source)
        lm_sentences = [normalize_text(e.text) for e in train]
        train_speakers = {e.speaker for e in train if e.speaker}
    else:
        lm_sentences = [normalize_text(line) for line in lm_source.read_text(encoding="utf-8").splitlines()]
        train_speakers = set()
    tmp = tempfile.TemporaryDirectory(prefix="bench_decoding_")
    lm_path = str(build_arpa(lm_sentences, Path(tmp.name) / "words.arpa", LMConfig()))

    recognizers = {role: Recognizer.from_checkpoint(path, device=args.device) for role, path in models.items()}
    if recognizers["joint"].model.decoder is None:
        _fail(f"--joint-model {models['joint']} has no attention decoder (CTC-only); pass a joint-trained model")
    if recognizers["ctc"].model.decoder is not None:
        print(f"note: --ctc-model {models['ctc']} has a decoder; only its CTC head is used", file=sys.stderr)
    rate = recognizers["ctc"].sample_rate
    if recognizers["joint"].sample_rate != rate:
        _fail("the two models expect different sample rates")
    print(f"loading {len(test)} test + {len(dev)} dev utterances", flush=True)
    test_waves = [load_audio(e.audio, rate) for e in test]
    dev_waves = [load_audio(e.audio, rate) for e in dev]

    rows: list[Row] = []
    encoded: dict[str, Encoded] = {}
    lm_notes = []
    for role, recognizer in recognizers.items():
        print(f"{role}: encoding {models[role]}", flush=True)
        encoded[role] = encode_all(recognizer, test_waves)
        dev_encoded = encode_all(recognizer, dev_waves)
        model_rows, lm_note = bench_model(role, recognizer, encoded[role], dev_encoded, dev_refs, lm_path, args)
        rows += model_rows
        lm_notes.append(lm_note)
        del dev_encoded
    tmp.cleanup()
    audio_s = encoded["ctc"].audio_seconds

    # ----- tables -----
    bounds, start = [], 0
    for set_name, entries in test_sets:
        bounds.append((set_name, start, start + len(entries)))
        start += len(entries)
    wer_of: dict[tuple[str, str, str], float] = {}
    results: list[list[object]] = []
    for r in rows:
        if not r.texts:
            results.append([r.model, r.method, *["—"] * (2 + len(bounds)), "—", "—", "—", r.note])
            continue
        wer, cer = score(refs, r.texts)[:2]
        per_set = [score(refs[a:b], r.texts[a:b])[0] for _, a, b in bounds]
        wer_of[(r.model, r.method, r.note)] = wer
        search_rtf = r.search_seconds / audio_s
        e2e_rtf = (r.search_seconds + encoded[r.model].encode_seconds) / audio_s
        ms_per_utt = 1000 * r.search_seconds / len(test)
        results.append(
            [r.model, r.method, _pct(wer), *(_pct(w) for w in per_set), _pct(cer),
             f"{search_rtf:.5f}", f"{e2e_rtf:.5f}", f"{ms_per_utt:.2f}", r.note]
        )  # fmt: skip
    headers = ["model", "method", "WER %", *(f"WER % {n}" for n, _, _ in bounds), "CER %",
               "search RTF", "end-to-end RTF", "search ms/utt", "settings"]  # fmt: skip

    def best(model: str, *, with_lm: bool) -> tuple[float, str]:
        """Lowest WER of our methods on ``model``; boosting (test-vocabulary knowledge) never counts."""
        candidates = [
            (w, m)
            for (mo, m, _), w in wer_of.items()
            if mo == model and "boost" not in m and m != "pyctcdecode" and (with_lm or "LM" not in m)
        ]
        return min(candidates) if candidates else (float("nan"), "—")

    def versus(with_lm: bool) -> str:
        (ctc_wer, ctc_method), (joint_wer, joint_method) = best("ctc", with_lm=with_lm), best("joint", with_lm=with_lm)
        rel = (ctc_wer - joint_wer) / ctc_wer if ctc_wer > 0 else float("nan")
        verdict = "met" if rel >= 0.10 else "not met"
        return (
            f"CTC-only {_pct(ctc_wer)} % ({ctc_method}) → joint {_pct(joint_wer)} % ({joint_method}): joint is "
            f"**{100 * rel:+.1f} %** relatively better (goal ≥ +10 %: {verdict})"
        )

    same = []
    for method in ("ctc_greedy", "ctc_prefix_beam"):
        c = [w for (mo, m, _), w in wer_of.items() if mo == "ctc" and m == method]
        j = [w for (mo, m, _), w in wer_of.items() if mo == "joint" and m == method]
        if c and j and c[0] > 0:
            change = 100 * (c[0] - j[0]) / c[0]
            same.append(f"{method} on both: {_pct(c[0])} → {_pct(j[0])} % ({change:+.1f} % relative)")

    speed_lines = []
    for model in ("ctc", "joint"):
        ours = next((r for r in rows if r.model == model and r.note.startswith("prune e^-5")), None)
        theirs = next((r for r in rows if r.model == model and r.method == "pyctcdecode"), None)
        if ours is None or theirs is None or not theirs.texts:
            continue
        w_ours, w_theirs = score(refs, ours.texts)[0], score(refs, theirs.texts)[0]
        agree = sum(normalize_text(a) == normalize_text(b) for a, b in zip(ours.texts, theirs.texts)) / len(refs)
        speed_lines.append(
            f"- {model}: ours {1000 * ours.search_seconds / len(refs):.2f} ms/utt vs pyctcdecode "
            f"{1000 * theirs.search_seconds / len(refs):.2f} ms/utt → ours is "
            f"**{theirs.search_seconds / ours.search_seconds:.2f}×** as fast; WER {_pct(w_ours)} vs "
            f"{_pct(w_theirs)} %; identical transcripts on {100 * agree:.1f} % of utterances."
        )
    pyctc_missing = next((r.note for r in rows if r.method == "pyctcdecode" and not r.texts), "")

    speakers = {e.speaker for e in test if e.speaker}
    set_rows: list[list[object]] = [
        [n, len(es), len({e.speaker for e in es}), f"{sum(e.duration for e in es) / 60:.1f}"] for n, es in test_sets
    ]
    set_rows.append(["all", len(test), len(speakers), f"{audio_s / 60:.1f}"])
    overlap = len(speakers & train_speakers)
    command = "python -m benchmarks.bench_decoding " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    device = recognizers["ctc"].device
    body = "\n".join(
        [
            "## Decoding: WER and speed per search method, CTC-only vs joint CTC/attention",
            "",
            f"`{command.strip()}` ({machine_line()}; encoder on {device}, search on CPU).",
            "",
            f"Models: CTC-only `{models['ctc']}` (step {recognizers['ctc'].bundle.step}), joint "
            f"`{models['joint']}` (step {recognizers['joint'].bundle.step}). Beam {args.beam}.",
            "",
            "Test set ("
            + (
                f"{overlap} of its {len(speakers)} speakers appear in the training manifest `{args.lm_train}`"
                if train_speakers
                else "speaker overlap with training not checked: --lm-train is not a manifest"
            )
            + (f"; `--limit {args.limit}` per manifest, evenly spread" if args.limit else "")
            + "):",
            "",
            table(["manifest", "utterances", "speakers", "minutes"], set_rows),
            "",
            "Each utterance is encoded once per model; each method then searches the stored CTC log-probs "
            f"/ encoder output. Search time is the median of {args.repeats} full passes after a warm-up "
            "batch, methods taking turns; end-to-end RTF adds one timed encode pass (features + CMVN + "
            "encoder + CTC head). "
            "WER/CER are scored after `normalize_text`, as in training.",
            "",
            table(headers, results),
            "",
            "**Joint vs CTC-only**, best of our methods for each model (phrase boosting never counts):",
            f"- without an external LM (acoustic model + search only): {versus(False)};",
            f"- with the dev-tuned n-gram allowed: {versus(True)}.",
            *([f"- same search on both: {'; '.join(same)}."] if same else []),
            "",
            f"**LM**: word {LMConfig().order}-gram (interpolated modified Kneser-Ney, `build_arpa`) from the "
            f"{len(lm_sentences)} transcripts of `{args.lm_train}` (training text only, never test text); "
            f"weight and length bonus chosen on the dev manifests ({', '.join(f'`{p}`' for p in dev_paths)}) "
            f"over {len(LM_GRID)} settings, then applied to test: " + "; ".join(lm_notes) + ". The n-gram is "
            "fused into the CTC prefix beam only; attention/joint decoding with the LM is not measured here.",
            "",
            f"**Boosting**: the ten digit words at +{BOOST:g} per token. The test vocabulary is closed (digits and "
            "command words) so this measures that boosting works, not an open-domain gain; it is left out of "
            "the joint-vs-CTC comparison.",
            "",
            f"**CTC prefix beam vs pyctcdecode** (same log-probs, beam {args.beam}, no LM, our pruning set to "
            f"its token_min_logp = {PYCTC_TOKEN_MIN_LOGP:g}; it also prunes beams {PYCTC_BEAM_PRUNE_LOGP:g} "
            "below the best, which we do not; we keep at most `beam` tokens per frame, it keeps all above the "
            "threshold). Goal: at least as fast at equal WER.",
            *(speed_lines or [f"- skipped: {pyctc_missing}"]),
        ]
    )
    print()
    print(body)
    if not args.no_write:
        update_section("decoding", body)


if __name__ == "__main__":
    main()
