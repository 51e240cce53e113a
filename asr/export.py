"""Deployment forms of a trained model: a TorchScript or ONNX graph, and quantised checkpoints.

``export_graph`` writes the acoustic half of the pipeline, waveforms → log-mel → CMVN → encoder
→ CTC log-probs, as one graph with dynamic batch and time axes, plus ``meta.json`` (tokenizer,
sample rate, frame shift, search defaults). The search stays in Python (:class:`ExportedModel`
runs it on the graph's output): it is not a tensor program, and CTC greedy search is a few
lines in any language.

The graph computes the STFT as a strided convolution with a windowed DFT basis rather than
``torch.stft``: ONNX has no complex tensors, and the convolution gives the same power spectrum
(a window's phase offset inside the FFT frame does not change magnitudes). The waveform is
padded by one window so any non-empty input yields a frame; the graph may therefore return a
frame more than the eager model, always past ``lens``.

``quantize_checkpoint`` writes an int8-dynamic or bfloat16 checkpoint that
:meth:`asr.inference.Recognizer.from_checkpoint` (hence the server) loads like any other.
"""

from __future__ import annotations

import base64
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from asr.checkpoint import ModelBundle, checkpoint_payload, load_checkpoint
from asr.config import EMBEDDED_LM, SearchConfig, from_dict, to_dict
from asr.decoding.ngram import load_arpa
from asr.decoding.search import search
from asr.errors import CheckpointError, ConfigError
from asr.features.frontend import LogMelFrontend
from asr.inference import pad_waveforms
from asr.quantization import compress_state, int8_weight_names
from asr.tokenizer import Tokenizer, tokenizer_from_dict

ExportFormat = Literal["torchscript", "onnx"]
GRAPH_FILES = {"torchscript": "model.ts", "onnx": "model.onnx"}
LM_FILE = "lm.arpa"  # the checkpoint's stored n-gram, written beside the graph; meta.json's lm_path names it
ONNX_OPSET = 17  # LSTM/GRU with sequence_lens and dynamic Pad/Conv: supported by every current runtime
INPUTS = ("waves", "wave_lens")  # (B, N) float32 zero-padded at the model's sample rate, (B,) int64
OUTPUTS = ("log_probs", "lens")  # (B, T', V) float32 CTC log-posteriors, (B,) int64 valid frames


def _logmel_frontend(bundle: ModelBundle) -> LogMelFrontend:
    """The bundle's log-mel front end; ConfigError for a Whisper one (see README, "Export")."""
    if not isinstance(bundle.frontend, LogMelFrontend):
        raise ConfigError(
            "graph export covers log-mel models only: a Whisper front end encodes inputs over 30 s in windows, "
            "which a traced graph cannot express; serve this model through the Recognizer (asr-server), "
            "optionally with its downstream model quantised (asr export --quantize int8)"
        )
    return bundle.frontend


class ExportGraph(nn.Module):
    """``waves (B, N)``, ``wave_lens (B,)`` → ``log_probs (B, T', V)``, ``lens (B,)``: the traced program."""

    basis: Tensor
    mel_filters: Tensor

    def __init__(self, bundle: ModelBundle) -> None:
        super().__init__()
        frontend = _logmel_frontend(bundle)
        self.win_length, self.hop_length = frontend.win_length, frontend.hop_length
        self.log_floor = frontend.cfg.log_floor
        n_fft = frontend.cfg.n_fft
        n = torch.arange(self.win_length, dtype=torch.float64)[:, None]
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[None]
        angle = 2 * math.pi * n * k / n_fft  # (win, K)
        window = frontend.window.double()[:, None].cpu()
        basis = torch.cat([(window * torch.cos(angle)).t(), (window * torch.sin(angle)).t()])  # (2K, win)
        self.register_buffer("basis", basis[:, None, :].float().contiguous())  # conv1d weight (2K, 1, win)
        self.register_buffer("mel_filters", frontend.mel_filters.detach().cpu().clone())  # (F, K)
        self.cmvn = bundle.cmvn
        self.model = bundle.model

    def forward(self, waves: Tensor, wave_lens: Tensor) -> tuple[Tensor, Tensor]:
        waves = waves * (torch.arange(waves.size(1), device=waves.device)[None] < wave_lens[:, None])
        waves = nn.functional.pad(waves, (0, self.win_length - 1))
        spec = nn.functional.conv1d(waves[:, None], self.basis, stride=self.hop_length)  # (B, 2K, T)
        real, imag = spec.chunk(2, dim=1)
        mel = torch.matmul(self.mel_filters, real.square() + imag.square())  # (B, F, T)
        feats = torch.log(mel + self.log_floor).transpose(1, 2)  # (B, T, F)
        feat_lens = (wave_lens.clamp(min=self.win_length) - self.win_length) // self.hop_length + 1
        feats = self.cmvn(feats, feat_lens)  # also zeroes frames past feat_lens
        enc, enc_lens = self.model.encode(feats, feat_lens)
        return self.model.ctc_log_probs(enc), enc_lens


def example_inputs(bundle: ModelBundle) -> tuple[Tensor, Tensor]:
    """Two utterances to trace with, sized so every shape-dependent branch is recorded.

    Frame stacking pads the frame count up to a multiple of the subsampling factor only when
    it is not one already; a trace records just the branch it saw, so the example gives
    ``T ≡ 1 (mod factor)`` frames and the recorded padding amount stays symbolic.
    """
    hop = _logmel_frontend(bundle).hop_length
    frames = 25 * bundle.model.subsampling_factor + 1
    samples = (frames - 1) * hop + 1  # the graph yields (N - 1) // hop + 1 frames
    waves = 0.1 * torch.randn(2, samples, generator=torch.Generator().manual_seed(0))
    return waves, torch.tensor([samples, samples // 2])


def _meta(bundle: ModelBundle, fmt: str) -> dict[str, Any]:
    search = to_dict(bundle.config.search)
    if search["lm_path"] == EMBEDDED_LM:  # the checkpoint's n-gram travels as a file beside the graph
        search["lm_path"] = LM_FILE
    tokenizer = {
        k: {"base64": base64.b64encode(v).decode("ascii")} if isinstance(v, bytes) else v
        for k, v in bundle.tokenizer.to_dict().items()
    }
    return {
        "format": fmt,
        "graph": GRAPH_FILES[fmt],
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "sample_rate": bundle.config.audio.sample_rate,
        "frame_shift_s": bundle.frontend.frame_shift_s * bundle.model.subsampling_factor,
        "tokenizer": tokenizer,
        "search": search,
        "step": bundle.step,
    }


def export_graph(bundle: ModelBundle, out_dir: str | Path, fmt: ExportFormat = "torchscript") -> Path:
    """Write ``out_dir/model.ts`` or ``model.onnx`` and ``out_dir/meta.json``; returns the graph path."""
    if fmt not in GRAPH_FILES:
        raise ConfigError(f"unknown export format {fmt!r}; use torchscript or onnx")
    if bundle.quantization != "none":
        raise ConfigError("export the float32 checkpoint; quantised checkpoints are loaded by the Recognizer itself")
    _logmel_frontend(bundle)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    graph = ExportGraph(bundle).cpu().eval()
    inputs = example_inputs(bundle)
    path = out / GRAPH_FILES[fmt]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values it records as constants
        if fmt == "torchscript":
            torch.jit.trace(graph, inputs, check_trace=False).save(str(path))
        else:
            _export_onnx(graph, inputs, path)
    if bundle.ngram_arpa:
        (out / LM_FILE).write_text(bundle.ngram_arpa, encoding="utf-8")
    (out / "meta.json").write_text(json.dumps(_meta(bundle, fmt), indent=1), encoding="utf-8")
    return path


def _export_onnx(graph: ExportGraph, inputs: tuple[Tensor, Tensor], path: Path) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail with our message, not torch's)
    except ImportError as exc:
        raise ConfigError("ONNX export needs the onnx package: pip install onnx onnxruntime") from exc
    torch.onnx.export(
        graph,
        inputs,
        str(path),
        dynamo=False,  # the TorchScript-based exporter maps packed sequences to ONNX sequence_lens
        input_names=list(INPUTS),
        output_names=list(OUTPUTS),
        dynamic_axes={
            "waves": {0: "B", 1: "N"},
            "wave_lens": {0: "B"},
            "log_probs": {0: "B", 1: "T"},
            "lens": {0: "B"},
        },
        opset_version=ONNX_OPSET,
    )


def quantize_checkpoint(source: str | Path, out: str | Path, kind: str) -> Path:
    """Write a copy of the float32 checkpoint ``source`` with ``int8_dynamic`` or ``bf16`` weights."""
    if kind not in ("int8_dynamic", "bf16"):
        raise ConfigError(f"unknown quantization {kind!r}; use int8_dynamic (or int8) or bf16")
    bundle = load_checkpoint(source)
    if bundle.quantization != "none":
        raise ConfigError(f"{source} is already quantised ({bundle.quantization}); start from the float32 model")
    payload = checkpoint_payload(bundle)
    payload["model"], scales = compress_state(payload["model"], kind, int8_weight_names(bundle.model))
    payload["quantization"] = kind
    if scales:
        payload["int8_scales"] = scales
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    return out


class ExportedModel:
    """An exported graph (TorchScript or ONNX Runtime) with its tokenizer and CTC search."""

    def __init__(self, folder: str | Path, *, threads: int = 0) -> None:
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise CheckpointError(f"{folder} has no meta.json; export a model there with `asr export`")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.format: str = self.meta["format"]
        self.sample_rate: int = self.meta["sample_rate"]
        self.search_config = from_dict(SearchConfig, self.meta["search"])
        lm_path = self.search_config.lm_path
        self.lm = load_arpa(folder / lm_path) if lm_path and self.search_config.lm_weight != 0.0 else None
        raw = {
            k: base64.b64decode(v["base64"]) if isinstance(v, dict) else v for k, v in self.meta["tokenizer"].items()
        }
        self.tokenizer: Tokenizer = tokenizer_from_dict(raw)
        self.pieces = self.tokenizer.pieces
        graph = folder / self.meta["graph"]
        if self.format == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated from torch 2.10 on
                self._module = torch.jit.load(str(graph), map_location="cpu").eval()
        else:
            self._session = _onnx_session(graph, threads)

    def __call__(self, waves: Tensor, wave_lens: Tensor) -> tuple[Tensor, Tensor]:
        """``waves (B, N)``, ``wave_lens (B,)`` → ``log_probs (B, T', V)``, ``lens (B,)`` (CPU tensors)."""
        if self.format == "torchscript":
            with torch.inference_mode():
                log_probs, lens = self._module(waves.float(), wave_lens.long())
            return log_probs, lens
        feeds = {"waves": waves.float().numpy(), "wave_lens": wave_lens.long().numpy()}
        log_probs_np, lens_np = self._session.run(list(OUTPUTS), feeds)
        return torch.from_numpy(log_probs_np), torch.from_numpy(lens_np)

    def transcribe(self, waveforms: Sequence[np.ndarray], search_config: SearchConfig | None = None) -> list[str]:
        """Texts of float32 mono waveforms at :attr:`sample_rate`, run as one padded batch."""
        waves, wave_lens = pad_waveforms(waveforms)
        log_probs, lens = self(waves, wave_lens)
        cfg = search_config or self.search_config
        lm = self.lm if cfg.lm_weight != 0.0 and cfg.lm_path == self.search_config.lm_path else None
        if lm is None and cfg.lm_weight != 0.0:
            lm = load_arpa(cfg.lm_path)
        nbests = search(log_probs, lens, cfg, pieces=self.pieces, lm=lm)
        return [self.tokenizer.decode(n.best.tokens) for n in nbests]


def _onnx_session(path: Path, threads: int) -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError("running an ONNX export needs onnxruntime: pip install onnxruntime") from exc
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
