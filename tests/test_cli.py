"""The `asr` command as a user runs it: real files in, text and exit codes out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from asr.cli import EXIT_ERROR, EXIT_USAGE, main
from asr.data.manifest import read_manifest
from asr.tokenizer import normalize_text

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def known(tiny_model_path):
    """Sample files the tiny model memorised, with their expected text."""
    entries = sorted(read_manifest(ROOT / "samples" / "manifest.jsonl"), key=lambda e: e.duration)[:3]
    return [(Path(e.audio), normalize_text(e.text)) for e in entries]


def test_transcribe_txt_prints_path_and_text(tiny_model_path, known, capsys):
    assert main(["transcribe", "--model", str(tiny_model_path), *[str(p) for p, _ in known]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{p}\t{text}" for p, text in known]


def test_transcribe_json_has_words_times_and_alternatives(tiny_model_path, known, capsys):
    path, text = known[0]
    args = ["transcribe", "--model", str(tiny_model_path), "--format", "json", "--method", "ctc_prefix_beam"]
    assert main([*args, "--nbest", "3", str(path)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["path"] == str(path) and record["text"] == text
    assert [w["word"] for w in record["words"]] == text.split()
    for word in record["words"]:
        assert 0.0 <= word["start_s"] <= word["end_s"] <= record["duration_s"]
        assert 0.0 <= word["confidence"] <= 1.0
    assert 1 <= len(record["alternatives"]) <= 3 and record["alternatives"][0]["text"] == text


def test_folder_with_a_corrupt_file_reports_it_and_transcribes_the_rest(tiny_model_path, known, tmp_path, capsys):
    good, text = known[0]
    shutil.copy(good, tmp_path / "a_good.wav")
    (tmp_path / "b_corrupt.wav").write_bytes(b"RIFF not really a wave file" * 10)
    (tmp_path / "notes.txt").write_text("ignored: not audio")
    assert main(["transcribe", "--model", str(tiny_model_path), str(tmp_path)]) == EXIT_ERROR
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"{tmp_path / 'a_good.wav'}\t{text}"]
    assert "b_corrupt.wav" in out.err and "1 of 2 files failed" in out.err


def test_eval_prints_wer_and_writes_rows(tiny_model_path, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    manifest = ROOT / "samples" / "manifest.jsonl"
    assert main(["eval", "--model", str(tiny_model_path), "--manifest", str(manifest), "--rows", str(rows)]) == 0
    assert "WER" in capsys.readouterr().out
    records = [json.loads(line) for line in rows.read_text().splitlines()]
    assert len(records) == len(read_manifest(manifest))
    assert {"audio", "reference", "hypothesis", "errors", "words"} <= set(records[0])


def test_missing_and_corrupt_models_give_clear_errors(tmp_path, known, capsys):
    path = str(known[0][0])
    assert main(["transcribe", "--model", str(tmp_path / "nope.pt"), path]) == EXIT_ERROR
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    assert main(["transcribe", "--model", str(bad), path]) == EXIT_ERROR
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_usage_and_config_errors_exit_codes(tmp_path, capsys):
    assert main(["transcribe"]) == EXIT_USAGE
    assert main(["frobnicate"]) == EXIT_USAGE
    cfg = tmp_path / "x.yaml"
    cfg.write_text("training:\n  max_stepz: 3\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == EXIT_ERROR
    assert "training.max_stepz" in capsys.readouterr().err


def test_prepare_folder_and_split(tmp_path, known, capsys):
    corpus = tmp_path / "corpus"
    for speaker in ("alice", "bob", "carol"):
        (corpus / speaker).mkdir(parents=True)
        for i, (path, text) in enumerate(known):
            shutil.copy(path, corpus / speaker / f"{i}.wav")
            (corpus / speaker / f"{i}.txt").write_text(text)
    assert main(["prepare", "folder", str(corpus), "--out", str(tmp_path / "m.jsonl")]) == 0
    assert len(read_manifest(tmp_path / "m.jsonl")) == 9
    args = ["prepare", "folder", str(corpus), "--out", str(tmp_path / "split")]
    assert main([*args, "--dev-fraction", "0.34", "--test-fraction", "0.34"]) == 0
    speakers = {
        name: {e.speaker for e in read_manifest(tmp_path / "split" / f"{name}.jsonl")}
        for name in ("train", "dev", "test")
    }
    assert (
        speakers["train"] and not (speakers["train"] & speakers["dev"]) and not (speakers["train"] & speakers["test"])
    )


def test_lm_pools_several_texts_and_prunes_rare_ngrams(tmp_path, capsys):
    from asr.decoding.ngram import load_arpa

    books = tmp_path / "books.txt"
    books.write_text("The cat sat on the mat.\nThe cat sat.\nA dog, Mr. Smith's, ran!\n")
    transcripts = tmp_path / "train.jsonl"
    record = {"audio": str(tmp_path / "a.wav"), "text": "THE CAT SAT", "duration": 1.0}
    transcripts.write_text(json.dumps(record) + "\n")
    shutil.copy(Path(__file__).parent.parent / "samples" / "fsdd" / "7_lucas_30.wav", tmp_path / "a.wav")
    base = ["lm", "--text", str(books), "--text", str(transcripts), "--order", "3"]
    assert main([*base, "--out", str(tmp_path / "full.arpa")]) == 0
    assert main([*base, "--out", str(tmp_path / "pruned.arpa"), "--min-count", "2", "2"]) == 0
    full, pruned = load_arpa(tmp_path / "full.arpa"), load_arpa(tmp_path / "pruned.arpa")
    assert full.in_vocab("mister") and full.in_vocab("smith's")  # normalised like transcripts
    assert ("the", "cat", "sat") in pruned.probs[2]  # three times across both texts
    assert ("a", "dog") in full.probs[1] and ("a", "dog") not in pruned.probs[1]


def test_lm_build_and_fusion_and_boost_flags(tiny_model_path, known, tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(t for _, t in known) + "\n")
    assert main(["lm", "--text", str(text), "--out", str(tmp_path / "lm.arpa"), "--order", "2"]) == 0
    assert (tmp_path / "lm.arpa").read_text().startswith("\n\\data\\") or "\\data\\" in (
        tmp_path / "lm.arpa"
    ).read_text()
    path, expected = known[0]
    args = [
        "transcribe",
        "--model",
        str(tiny_model_path),
        "--method",
        "ctc_prefix_beam",
        "--lm",
        str(tmp_path / "lm.arpa"),
    ]
    assert main([*args, "--boost", f"{expected}:1.5", str(path)]) == 0
    assert capsys.readouterr().out.strip().endswith(expected)
    assert main([*args, "--boost", "x:notanumber", str(path)]) == EXIT_ERROR


def test_plot_draws_png(tiny_model_path, tmp_path):
    run_dir = Path(tiny_model_path).parent
    out = tmp_path / "curves.png"
    assert main(["plot", str(run_dir), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lm_from_a_manifest_uses_its_normalised_transcripts(samples, tmp_path):
    assert main(["lm", "--text", str(samples.manifest), "--out", str(tmp_path / "m.arpa"), "--order", "2"]) == 0
    from asr.decoding.ngram import load_arpa
    from asr.tokenizer import normalize_text

    unigrams = set(load_arpa(tmp_path / "m.arpa").probs[0])
    words = {w for text in samples.texts for w in normalize_text(text).split()}
    assert {(w,) for w in words} <= unigrams
    assert not any(any(c in word[0] for c in ",.;!?") or word[0] != word[0].lower() for word in unigrams)
