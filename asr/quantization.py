"""Reduced-precision variants of a trained model: int8 dynamic quantisation and bfloat16.

A quantised checkpoint is an ordinary checkpoint whose ``quantization`` field names the variant
and whose weights are stored small: int8 values plus one scale per matrix (``int8_dynamic``) or
bfloat16 (``bf16``). :func:`restore_state` turns them back into a float32 ``state_dict`` and
:func:`apply_quantization` then converts the built model at load time, so everything that loads
models through :func:`asr.checkpoint.load_checkpoint` (the CLI, the server) gets the variant
with no code of its own.

The int8 scheme is symmetric per tensor with the range restricted to ±127 (scale = max|w| / 127).
With that range, quantising the stored (already-rounded) weights again at load time reproduces
the stored int8 values, so the weights that run are exactly the ones that were exported.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

QUANTIZATIONS = ("none", "int8_dynamic", "bf16")
INT8_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell)
M = TypeVar("M", bound=nn.Module)
INT8_RANGE = 127  # symmetric ±127 rather than [-128, 127]: re-quantising a stored tensor is then exact


def _int8_qconfig() -> Any:
    from torch.ao.quantization import MinMaxObserver, QConfig
    from torch.ao.quantization.qconfig import default_dynamic_qconfig

    weight = MinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-INT8_RANGE, quant_max=INT8_RANGE
    )
    return QConfig(activation=default_dynamic_qconfig.activation, weight=weight)


def int8_weight_names(model: nn.Module) -> list[str]:
    """Names (``state_dict`` keys) of the weight matrices that dynamic int8 quantisation converts."""
    names = []
    for prefix, module in model.named_modules():
        if type(module) in INT8_MODULES:
            for name, param in module.named_parameters(recurse=False):
                if name.startswith("weight") and param.dim() == 2:
                    names.append(f"{prefix}.{name}" if prefix else name)
    return names


def compress_state(
    state: Mapping[str, Tensor], kind: str, int8_names: list[str]
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Storage form of a float32 ``state_dict``: ``(state, int8 scales)``.

    ``int8_dynamic``: the matrices in ``int8_names`` become int8 with one scale each; everything
    else (biases, convolutions, embeddings) stays float32, as dynamic quantisation leaves it.
    ``bf16``: every floating tensor becomes bfloat16.
    """
    if kind not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {kind!r}; use one of {', '.join(QUANTIZATIONS)}")
    stored: dict[str, Tensor] = {}
    scales: dict[str, float] = {}
    for key, value in state.items():
        if kind == "int8_dynamic" and key in int8_names:
            scale = max(float(value.abs().max()) / INT8_RANGE, torch.finfo(torch.float32).eps)
            stored[key] = torch.round(value / scale).clamp(-INT8_RANGE, INT8_RANGE).to(torch.int8)
            scales[key] = scale
        elif kind == "bf16" and value.is_floating_point():
            stored[key] = value.to(torch.bfloat16)
        else:
            stored[key] = value
    return stored, scales


def restore_state(stored: Mapping[str, Tensor], scales: Mapping[str, float]) -> dict[str, Tensor]:
    """Float32 ``state_dict`` from the storage form (the inverse of :func:`compress_state`, up to rounding)."""
    state = {}
    for key, value in stored.items():
        if key in scales:
            state[key] = value.float() * scales[key]
        elif value.dtype == torch.bfloat16:
            state[key] = value.float()
        else:
            state[key] = value
    return state


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with its floating tensors (also inside packed sequences and tuples) cast to ``dtype``."""
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, PackedSequence):
        return value._replace(data=value.data.to(dtype))
    if isinstance(value, tuple) and not hasattr(value, "_fields"):  # leave other named tuples alone
        return tuple(_cast(v, dtype) for v in value)
    if isinstance(value, list):
        return [_cast(v, dtype) for v in value]
    return value


def _to_bf16(model: M) -> M:
    """bfloat16 weights behind float32 interfaces.

    Every module that holds parameters computes in bfloat16 and hands float32 back, so callers
    (feature pipeline, streaming state, search, attention decoder) never see a bfloat16 tensor
    and need no change. The log-softmax of the CTC head already runs in float32.
    """
    for module in model.modules():
        if any(True for _ in module.parameters(recurse=False)):
            module.to(torch.bfloat16)
            module.register_forward_pre_hook(lambda _m, args: _cast(args, torch.bfloat16))
            module.register_forward_hook(lambda _m, _args, output: _cast(output, torch.float32))
    return model


def apply_quantization(model: M, kind: str) -> M:
    """Convert a float32 model (eval mode) in place to the runtime form of ``kind`` (``none``: unchanged).

    ``int8_dynamic`` uses PyTorch's eager dynamic quantisation (int8 weights, activations quantised
    per batch on the fly) on LSTM/GRU/Linear layers; it runs on CPU only. PyTorch 2.10+ marks that
    API deprecated in favour of torchao, which has no recurrent layers, hence the filtered warnings.
    """
    if kind == "none":
        return model
    if kind == "bf16":
        return _to_bf16(model)
    if kind != "int8_dynamic":
        raise ValueError(f"unknown quantization {kind!r}; use one of {', '.join(QUANTIZATIONS)}")
    qconfig = _int8_qconfig()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(model, {t: qconfig for t in INT8_MODULES}, dtype=torch.qint8, inplace=True)
    return model
