"""`asr pack`: a model file that carries its own n-gram and default search settings.

The shipped model's default search fuses an n-gram; these tests show that the stored LM is the
one used (same scores as passing the ARPA file), that the model file alone is enough (the ARPA
file deleted), and that exports and int8 copies keep it.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from asr.audio import load_audio
from asr.checkpoint import load_checkpoint, read_payload, save_checkpoint
from asr.cli import EXIT_ERROR, main
from asr.config import EMBEDDED_LM
from asr.errors import CheckpointError
from asr.export import ExportedModel, export_graph, quantize_checkpoint
from asr.inference import Recognizer

LM_WEIGHT = 0.7


@pytest.fixture(scope="module")
def waveforms(samples):
    return [load_audio(p) for p in samples.paths]


@pytest.fixture(scope="module")
def arpa(samples, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    text = folder / "corpus.txt"
    text.write_text("\n".join(samples.texts) + "\n", encoding="utf-8")
    assert main(["lm", "--text", str(text), "--out", str(folder / "words.arpa"), "--order", "2"]) == 0
    return folder / "words.arpa"


@pytest.fixture(scope="module")
def packed(tiny_model_path, arpa, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "model.pt"
    args = ["pack", "--model", str(tiny_model_path), "--out", str(out), "--lm", str(arpa)]
    assert main([*args, "--method", "ctc_prefix_beam", "--beam", "4", "--lm-weight", str(LM_WEIGHT)]) == 0
    return out


def _scores_and_texts(recognizer, waveforms, search=None):
    results = recognizer.transcribe_batch(waveforms, search)
    return [round(r.alternatives[0].score, 4) for r in results], [r.text for r in results]


def test_packed_model_fuses_its_stored_lm_exactly_like_the_arpa_file(tiny_model_path, packed, arpa, waveforms):
    stored = Recognizer.from_checkpoint(packed, device="cpu")
    assert stored.search_config.lm_path == EMBEDDED_LM and stored.search_config.lm_weight == LM_WEIGHT
    plain = Recognizer.from_checkpoint(tiny_model_path, device="cpu")
    with_file = dataclasses.replace(stored.search_config, lm_path=str(arpa))
    fused = _scores_and_texts(stored, waveforms)
    assert fused == _scores_and_texts(plain, waveforms, with_file)
    no_lm = dataclasses.replace(stored.search_config, lm_path="", lm_weight=0.0)
    assert fused[0] != _scores_and_texts(plain, waveforms, no_lm)[0]  # the LM really takes part


def test_packed_model_needs_no_other_file(packed, arpa, waveforms, tmp_path):
    alone = tmp_path / "copy.pt"
    shutil.copy(packed, alone)
    expected = _scores_and_texts(Recognizer.from_checkpoint(packed, device="cpu"), waveforms)
    moved = arpa.with_suffix(".moved")
    arpa.rename(moved)
    try:
        assert _scores_and_texts(Recognizer.from_checkpoint(alone, device="cpu"), waveforms) == expected
    finally:
        moved.rename(arpa)


def test_export_and_int8_keep_the_stored_lm(packed, waveforms, tmp_path):
    texts = _scores_and_texts(Recognizer.from_checkpoint(packed, device="cpu"), waveforms)[1]
    export_graph(load_checkpoint(packed), tmp_path / "ts", "torchscript")
    assert (tmp_path / "ts" / "lm.arpa").is_file()
    exported = ExportedModel(tmp_path / "ts")
    assert exported.lm is not None and exported.transcribe(waveforms) == texts
    int8 = quantize_checkpoint(packed, tmp_path / "int8.pt", "int8_dynamic")
    assert load_checkpoint(int8).ngram_arpa == load_checkpoint(packed).ngram_arpa


def test_no_lm_drops_the_stored_ngram(packed, tmp_path):
    out = tmp_path / "plain.pt"
    assert main(["pack", "--model", str(packed), "--out", str(out), "--no-lm", "--method", "ctc_greedy"]) == 0
    bundle = load_checkpoint(out)
    assert bundle.ngram_arpa == "" and bundle.config.search.lm_path == "" and bundle.config.search.lm_weight == 0.0


def test_fine_tuning_a_packed_model_keeps_its_stored_lm(packed, samples, tmp_path):
    from asr.data.manifest import read_manifest, write_manifest
    from asr.training.finetune import FinetuneConfig, finetune

    memorised = sorted(read_manifest(samples.manifest), key=lambda e: e.duration)[:4]
    manifest = write_manifest(tmp_path / "user.jsonl", memorised)
    result = finetune(packed, [str(manifest)], [str(manifest)], tmp_path / "run", FinetuneConfig(max_steps=2),
                      progress=False)
    tuned = load_checkpoint(result.model_path)
    assert tuned.ngram_arpa == load_checkpoint(packed).ngram_arpa
    assert tuned.config.search.lm_path == EMBEDDED_LM and Recognizer(tuned).lm(EMBEDDED_LM) is not None


def test_bad_packs_are_refused_with_clear_errors(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "out.pt"
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0 a\n\\end\\\n", encoding="utf-8")
    assert main(["pack", "--model", str(tiny_model_path), "--out", str(out), "--lm", str(bad)]) == EXIT_ERROR
    assert "bad.arpa" in capsys.readouterr().err and not out.exists()
    missing = str(tmp_path / "nope.arpa")
    assert main(["pack", "--model", str(tiny_model_path), "--out", str(out), "--lm", missing]) == EXIT_ERROR
    assert "does not exist" in capsys.readouterr().err
    assert main(["pack", "--model", str(tiny_model_path), "--out", str(out), "--lm-weight", "0.5"]) == EXIT_ERROR
    assert "no n-gram" in capsys.readouterr().err and not out.exists()


def test_checkpoint_naming_a_missing_stored_lm_is_refused(tiny_model_path, tmp_path):
    bundle = load_checkpoint(tiny_model_path)
    search = dataclasses.replace(bundle.config.search, lm_path=EMBEDDED_LM, lm_weight=0.5)
    broken = dataclasses.replace(bundle, config=dataclasses.replace(bundle.config, search=search))
    path = save_checkpoint(tmp_path / "broken.pt", broken)
    assert read_payload(path).get("ngram_arpa") is None
    with pytest.raises(CheckpointError, match="stores no n-gram"):
        load_checkpoint(path)


def test_tune_scores_the_grid_on_dev_and_ships_no_lm_when_it_does_not_help(
    tiny_model_path, arpa, samples, tmp_path, capsys
):
    out = tmp_path / "tuned.pt"
    args = ["pack", "--model", str(tiny_model_path), "--out", str(out), "--lm", str(arpa)]
    assert main([*args, "--method", "ctc_prefix_beam", "--beam", "4", "--tune", str(samples.manifest)]) == 0
    printed = capsys.readouterr().out
    grid = [line for line in printed.splitlines() if line.strip().startswith("lm_weight")]
    assert len(grid) == 1 + 6 * 3 and sum("<- chosen" in line for line in grid) == 1
    chosen = next(line for line in grid if "<- chosen" in line)
    no_lm_wer = float(grid[0].split("WER")[1].split("%")[0])
    assert float(chosen.split("WER")[1].split("%")[0]) <= no_lm_wer
    search = load_checkpoint(out).config.search
    if "lm_weight 0 " in chosen:
        assert search.lm_path == "" and search.lm_weight == 0.0 and load_checkpoint(out).ngram_arpa == ""
    else:
        assert search.lm_path == EMBEDDED_LM and search.lm_weight > 0.0


def test_tune_grid_and_dev_subset_can_be_chosen(tiny_model_path, arpa, samples, tmp_path, capsys):
    args = ["pack", "--model", str(tiny_model_path), "--out", str(tmp_path / "t.pt"), "--lm", str(arpa)]
    grid_args = ["--tune-weights", "0.25", "0.5", "--tune-bonuses", "1.5", "--tune-limit", "5"]
    assert main([*args, "--method", "ctc_prefix_beam", "--tune", str(samples.manifest), *grid_args]) == 0
    printed = capsys.readouterr().out
    assert "LM fusion on 5 dev utterances" in printed
    grid = [line.split()[1:4:2] for line in printed.splitlines() if line.strip().startswith("lm_weight")]
    assert grid == [["0", "0"], ["0.25", "1.5"], ["0.5", "1.5"]]
    bad = [*args, "--method", "ctc_prefix_beam", "--tune", str(samples.manifest), "--tune-limit", "-1"]
    assert main(bad) == EXIT_ERROR
    assert "--tune-limit" in capsys.readouterr().err


def test_tune_refuses_a_search_without_a_beam(tiny_model_path, arpa, samples, tmp_path, capsys):
    args = ["pack", "--model", str(tiny_model_path), "--out", str(tmp_path / "x.pt"), "--lm", str(arpa)]
    assert main([*args, "--method", "ctc_greedy", "--tune", str(samples.manifest)]) == EXIT_ERROR
    assert "beam search" in capsys.readouterr().err


def test_the_stored_lm_is_compressed_and_older_plain_text_checkpoints_still_load(packed, arpa, tmp_path):
    payload = read_payload(packed)
    text = arpa.read_text(encoding="utf-8")
    assert "ngram_arpa" not in payload and len(payload["ngram_arpa_gz"]) < len(text.encode())
    assert load_checkpoint(packed).ngram_arpa == text
    old = {k: v for k, v in payload.items() if k != "ngram_arpa_gz"} | {"ngram_arpa": text}
    torch.save(old, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").ngram_arpa == text
    torch.save(payload | {"ngram_arpa_gz": b"not gzip"}, tmp_path / "corrupt.pt")
    with pytest.raises(CheckpointError, match="not gzip-compressed ARPA text"):
        load_checkpoint(tmp_path / "corrupt.pt")
