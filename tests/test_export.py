"""Exported graphs match the eager model on real audio; quantised checkpoints load and transcribe alike."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from asr.audio import load_audio
from asr.checkpoint import load_checkpoint, read_payload, save_checkpoint
from asr.cli import main
from asr.errors import CheckpointError
from asr.export import ExportedModel, export_graph, quantize_checkpoint
from asr.inference import Recognizer, pad_waveforms
from asr.streaming import StreamingOptions, finish_batch
from asr.training.evaluate import score

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


@pytest.fixture(scope="module")
def waveforms(samples):
    return [load_audio(p) for p in samples.paths]


@pytest.fixture(scope="module")
def float_texts(tiny_model_path, waveforms):
    return [t.text for t in Recognizer.from_checkpoint(tiny_model_path, device="cpu").transcribe_batch(waveforms)]


def eager_log_probs(model_path, waveforms):
    recognizer = Recognizer.from_checkpoint(model_path, device="cpu")
    waves, wave_lens = pad_waveforms(waveforms)
    with torch.inference_mode():
        enc, enc_lens = recognizer.encode(waves, wave_lens)
        return recognizer.model.ctc_log_probs(enc), enc_lens


def assert_parity(exported: ExportedModel, model_path, waveforms) -> None:
    expected, expected_lens = eager_log_probs(model_path, waveforms)
    waves, wave_lens = pad_waveforms(waveforms)
    log_probs, lens = exported(waves, wave_lens)
    assert torch.equal(lens, expected_lens)
    for b, n in enumerate(lens.tolist()):
        torch.testing.assert_close(log_probs[b, :n], expected[b, :n], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.skipif(not HAS_ONNX, reason="onnx not installed"))]
)
def test_exported_graph_matches_eager_log_probs_and_text(fmt, tiny_model_path, waveforms, float_texts, tmp_path):
    export_graph(load_checkpoint(tiny_model_path), tmp_path, fmt)
    exported = ExportedModel(tmp_path)
    assert_parity(exported, tiny_model_path, waveforms)  # all 12 samples, 0.3 s to 3.3 s, as one padded batch
    assert_parity(exported, tiny_model_path, waveforms[4:5])  # other batch and time sizes than the trace
    assert exported.transcribe(waveforms) == float_texts
    assert json.loads((tmp_path / "meta.json").read_text())["sample_rate"] == 16000


def test_int8_checkpoint_is_smaller_and_transcribes_like_float32(tiny_model_path, samples, waveforms, tmp_path):
    path = quantize_checkpoint(tiny_model_path, tmp_path / "int8.pt", "int8_dynamic")
    assert path.stat().st_size < 0.4 * tiny_model_path.stat().st_size
    payload = read_payload(path)
    assert payload["quantization"] == "int8_dynamic"
    assert payload["model"]["ctc_head.proj.weight"].dtype == torch.int8
    recognizer = Recognizer.from_checkpoint(path, device="cpu")
    assert recognizer.bundle.quantization == "int8_dynamic"
    memorised = sorted(range(len(samples.durations)), key=samples.durations.__getitem__)[:8]  # the fixture's set
    texts = [t.text for t in recognizer.transcribe_batch([waveforms[i] for i in memorised])]
    assert texts == ["five", "nine", "three", "seven", "down", "left", "no", "stop"]
    # Streaming too: int8 LSTM layers run one direction at a time, and stream ends share one pass.
    sessions = [recognizer.open_stream(StreamingOptions(chunk_ms=320, endpoint_silence_ms=0)) for _ in range(2)]
    for session, index in zip(sessions, memorised[:2], strict=True):
        session.push(waveforms[index])
    finals = [[r.transcript.text for r in results if r.is_final] for results in finish_batch(sessions)]
    assert finals == [["five"], ["nine"]]


def test_int8_weights_that_run_are_exactly_the_stored_ones(tiny_model_path, tmp_path):
    path = quantize_checkpoint(tiny_model_path, tmp_path / "int8.pt", "int8_dynamic")
    stored = read_payload(path)
    running = Recognizer.from_checkpoint(path, device="cpu").model.ctc_head.proj.weight()
    assert torch.equal(running.int_repr(), stored["model"]["ctc_head.proj.weight"])
    assert running.q_scale() == pytest.approx(stored["int8_scales"]["ctc_head.proj.weight"], rel=1e-6)


def test_bf16_checkpoint_transcribes_like_float32_with_float32_interfaces(
    tiny_model_path, samples, waveforms, float_texts, tmp_path
):
    path = quantize_checkpoint(tiny_model_path, tmp_path / "bf16.pt", "bf16")
    assert path.stat().st_size < 0.6 * tiny_model_path.stat().st_size
    recognizer = Recognizer.from_checkpoint(path, device="cpu")
    assert next(recognizer.model.parameters()).dtype == torch.bfloat16
    waves, wave_lens = pad_waveforms(waveforms[:2])
    enc, _ = recognizer.encode(waves, wave_lens)
    assert enc.dtype == torch.float32
    # Exact text only where float32 is confident (the memorised samples): on the others the tiny
    # model guesses, and bf16 rounding (whose kernels differ between CPUs) may flip a guessed letter.
    memorised = sorted(range(len(samples.durations)), key=samples.durations.__getitem__)[:8]  # the fixture's set
    texts = [t.text for t in recognizer.transcribe_batch(waveforms)]
    assert [texts[i] for i in memorised] == [float_texts[i] for i in memorised]
    assert score(float_texts, texts)[1] < 0.1  # and the guesses stay close


def test_quantised_bundle_cannot_be_saved_or_requantised(tiny_model_path, tmp_path):
    path = quantize_checkpoint(tiny_model_path, tmp_path / "bf16.pt", "bf16")
    with pytest.raises(CheckpointError, match="float32"):
        save_checkpoint(tmp_path / "again.pt", load_checkpoint(path))
    with pytest.raises(Exception, match="already quantised"):
        quantize_checkpoint(path, tmp_path / "int8.pt", "int8_dynamic")


def test_cli_export_torchscript_and_quantize(tiny_model_path, samples, tmp_path, capsys):
    assert main(["export", "--model", str(tiny_model_path), "--out", str(tmp_path / "ts")]) == 0
    assert (tmp_path / "ts" / "model.ts").is_file()
    assert main(["export", "--model", str(tiny_model_path), "--quantize", "int8", "--out", str(tmp_path)]) == 0
    assert "model_int8.pt" in capsys.readouterr().out
    shortest = samples.paths[samples.durations.index(min(samples.durations))]
    assert main(["transcribe", str(shortest), "--model", str(tmp_path / "model_int8.pt"), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip().endswith("five")
