"""Fine-tuning the tiny model on speakers it never heard: vocabulary checks, freezing, loss going down."""

from __future__ import annotations

import pytest
import torch

from asr.checkpoint import load_checkpoint
from asr.cli import main
from asr.config import FinetuneConfig
from asr.data.manifest import read_manifest, write_manifest
from asr.errors import ConfigError
from asr.inference import Recognizer
from asr.training.finetune import encoder_trainable, extend_vocabulary, finetune


@pytest.fixture(scope="module")
def manifests(samples, tmp_path_factory):
    """The tiny model's 8 memorised utterances, and two unseen speakers saying "up" and "yes"."""
    entries = read_manifest(samples.manifest)
    memorised = sorted(entries, key=lambda e: e.duration)[:8]
    new_speaker = [e for e in entries if e.text in ("up", "yes")]
    folder = tmp_path_factory.mktemp("finetune_data")
    return write_manifest(folder / "base.jsonl", memorised), write_manifest(folder / "user.jsonl", new_speaker)


def test_characters_the_model_cannot_emit_are_listed(tiny_model_path, manifests, tmp_path):
    _, user = manifests
    with pytest.raises(ConfigError, match=r"cannot emit: 'u' \(1×\), 'y' \(1×\).*--extend-vocab"):
        finetune(tiny_model_path, [str(user)], [str(user)], tmp_path, FinetuneConfig(max_steps=1))
    assert not (tmp_path / "model.pt").exists()


def test_extending_the_vocabulary_keeps_every_transcript(tiny_model_path, samples):
    base = load_checkpoint(tiny_model_path)
    extended = extend_vocabulary(base, ["u", "y"])
    assert extended.tokenizer.vocab_size == base.tokenizer.vocab_size + 2
    assert extended.model.ctc_head.proj.out_features == base.tokenizer.vocab_size + 2
    texts = [[t.text for t in Recognizer(b, device="cpu").transcribe_files(samples.paths)] for b in (base, extended)]
    assert texts[0] == texts[1]


def test_freezing_counts_subsampling_as_layer_zero():
    trainable = encoder_trainable(2, num_rnn_layers=3)
    assert not trainable("encoder.subsampling.proj.weight")
    assert not trainable("encoder.layers.0.weight_ih_l0")
    assert not trainable("encoder.projections.0.weight")
    assert trainable("encoder.layers.1.weight_hh_l0_reverse")
    assert trainable("ctc_head.proj.weight")
    with pytest.raises(ConfigError, match=r"outside \[0, 4\]"):
        encoder_trainable(5, num_rnn_layers=3)


def test_finetune_cli_lowers_new_speakers_dev_loss_and_keeps_frozen_layers(
    tiny_model_path, manifests, tmp_path, capsys
):
    base_manifest, user = manifests
    args = ["finetune", "--from", str(tiny_model_path), "--train", str(user), "--dev", str(user)]
    args += ["--base-test", str(base_manifest), "--out", str(tmp_path), "--steps", "30", "--warmup-steps", "5"]
    args += ["--freeze-encoder-layers", "2", "--extend-vocab", "--quiet"]
    assert main([*args, "--set", "training.threads=1", "--set", "training.device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "added to the vocabulary: u y" in out and "user dev" in out and "base test" in out

    tuned = load_checkpoint(tmp_path / "model.pt")
    report = tuned.metrics["finetune"]
    dev, base_test = report["rows"]
    assert dev["loss_after"] < 0.8 * dev["loss_before"]
    assert report["added_chars"] == ["u", "y"] and report["steps"] == 30
    assert report["learning_rate"] == pytest.approx(3e-4)  # the tiny recipe's 3e-3 / 10
    assert base_test["utterances"] == 8
    before, after = load_checkpoint(tiny_model_path).model.state_dict(), tuned.model.state_dict()
    assert torch.equal(before["encoder.subsampling.proj.weight"], after["encoder.subsampling.proj.weight"])
    assert torch.equal(before["encoder.layers.0.weight_ih_l0"], after["encoder.layers.0.weight_ih_l0"])
    assert not torch.equal(before["encoder.layers.1.weight_ih_l0"], after["encoder.layers.1.weight_ih_l0"])


def test_a_ctc_model_gains_an_attention_decoder_and_keeps_its_encoder(tiny_model_path, manifests, tmp_path):
    base_manifest, _ = manifests
    overrides = ["model.decoder.enabled=true", "model.ctc_weight=0.3", "training.threads=1", "training.device=cpu"]
    overrides += ["model.decoder.embed_dim=8", "model.decoder.hidden_size=16", "model.decoder.attention_dim=8"]
    cfg = FinetuneConfig(max_steps=3, warmup_steps=1, learning_rate=1e-9)  # a step too small to move the encoder
    result = finetune(tiny_model_path, [str(base_manifest)], [str(base_manifest)], tmp_path, cfg, overrides=overrides)
    joint = load_checkpoint(result.model_path)
    assert joint.model.decoder is not None and joint.config.model.ctc_weight == 0.3
    before = load_checkpoint(tiny_model_path).model.state_dict()
    after = joint.model.state_dict()
    assert all(torch.allclose(before[k], after[k], atol=1e-5) for k in before)
    paths = [e.audio for e in read_manifest(base_manifest)]
    base_texts = [t.text for t in Recognizer(load_checkpoint(tiny_model_path), device="cpu").transcribe_files(paths)]
    assert [t.text for t in Recognizer(joint, device="cpu").transcribe_files(paths)] == base_texts


def test_other_architecture_changes_are_still_refused(tiny_model_path, manifests, tmp_path):
    base_manifest, _ = manifests
    with pytest.raises(ConfigError, match="change the model's architecture"):
        finetune(
            tiny_model_path,
            [str(base_manifest)],
            [str(base_manifest)],
            tmp_path,
            FinetuneConfig(max_steps=1),
            overrides=["model.encoder.num_layers=5"],
        )
