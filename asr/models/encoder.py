"""Deep (bi)directional RNN encoder: subsampling → a stack of single-layer cuDNN RNNs.

The stack is built one layer at a time (a ``ModuleList`` of one-layer ``nn.LSTM``/``nn.GRU``/
``nn.RNN``) rather than one multi-layer module, so that a projection can sit between layers
and a latency-controlled streaming pass can drive the same layers chunk by chunk. Each layer
is still a single fused cuDNN kernel over the whole sequence: there is no Python loop over time.

Sequences are packed (``enforce_sorted=False``), so the backward direction of every layer
starts at each utterance's last real frame: padding never leaks into valid outputs, and an
utterance encodes identically alone or in a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import torch
from torch import _VF, Tensor, nn
from torch.ao.nn.quantized.dynamic import LSTM as Int8LSTM  # loaded by `import torch` already
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from asr.config import EncoderConfig
from asr.errors import ConfigError
from asr.models.subsampling import build_subsampling, subsampled_lengths, time_mask


def _build_rnn(rnn_type: str, input_size: int, hidden_size: int, bidirectional: bool) -> nn.RNNBase:
    if rnn_type == "lstm":
        return nn.LSTM(input_size, hidden_size, batch_first=True, bidirectional=bidirectional)
    if rnn_type == "gru":
        return nn.GRU(input_size, hidden_size, batch_first=True, bidirectional=bidirectional)
    if rnn_type == "rnn":
        return nn.RNN(input_size, hidden_size, nonlinearity="tanh", batch_first=True, bidirectional=bidirectional)
    raise ValueError(f"unknown rnn_type {rnn_type!r}; use 'lstm', 'gru' or 'rnn'")


def _map_packed(packed: PackedSequence, module: nn.Module) -> PackedSequence:
    """Apply a per-frame module to the packed data (no re-packing: frame order is unchanged)."""
    return PackedSequence(module(packed.data), packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)


RNNState = Tensor | tuple[Tensor, Tensor]  # h, or (h, c) for LSTM; each (directions, B, H)


@dataclass
class EncoderChunkState:
    """What latency-controlled streaming carries from one chunk to the next.

    Only the *forward* direction is carried; the backward direction restarts from zero at the
    end of every chunk's right context, which is what bounds latency (LC-BLSTM, Zhang et al. 2016).
    """

    left_feats: Tensor | None = None  # (B, factor, F): last feature frames, the subsampling's left context
    forward_states: list[RNNState] = field(default_factory=list)  # per layer, forward direction (1, B, H)
    # The last chunk's look-ahead (B, T_r, F) and its subsampled frames (B, T_r / factor, H): the next
    # chunk starts with those feature frames, so it reuses their subsampling instead of recomputing it.
    right_feats: Tensor | None = None
    right_sub: Tensor | None = None

    @property
    def started(self) -> bool:
        """False before the first chunk: such streams have no left context and cannot be stacked with others."""
        return self.left_feats is not None

    @staticmethod
    def stack(states: Sequence[EncoderChunkState]) -> EncoderChunkState:
        """Concatenate the states of started streams along the batch dimension, in order."""
        if not states or not all(s.started for s in states):
            raise ValueError("only started chunk states can be stacked; encode first chunks as their own batch")
        left = torch.cat([s.left_feats for s in states if s.left_feats is not None])
        forward: list[RNNState] = []
        for layer_states in zip(*(s.forward_states for s in states), strict=True):
            if isinstance(layer_states[0], tuple):
                pairs = [s for s in layer_states if isinstance(s, tuple)]
                forward.append((torch.cat([h for h, _ in pairs], dim=1), torch.cat([c for _, c in pairs], dim=1)))
            else:
                forward.append(torch.cat([s for s in layer_states if isinstance(s, Tensor)], dim=1))
        right_feats = right_sub = None
        feats = [s.right_feats for s in states if s.right_feats is not None]
        subs = [s.right_sub for s in states if s.right_sub is not None]
        if len(feats) == len(subs) == len(states) and len({f.shape for f in feats}) == 1:
            right_feats, right_sub = torch.cat(feats), torch.cat(subs)
        return EncoderChunkState(left_feats=left, forward_states=forward, right_feats=right_feats, right_sub=right_sub)

    def split(self) -> list[EncoderChunkState]:
        """One state per stream of the batch: the inverse of :meth:`stack`."""
        if self.left_feats is None:
            raise ValueError("an unstarted chunk state holds no streams to split")
        return [
            EncoderChunkState(
                left_feats=self.left_feats[b : b + 1],
                forward_states=[_map_state(s, _batch_row(b)) for s in self.forward_states],
                right_feats=None if self.right_feats is None else self.right_feats[b : b + 1],
                right_sub=None if self.right_sub is None else self.right_sub[b : b + 1],
            )
            for b in range(self.left_feats.size(0))
        ]


def _batch_row(index: int) -> Callable[[Tensor], Tensor]:
    """Slice one stream out of a ``(directions, B, H)`` state, keeping the batch dimension."""
    return lambda t: t[:, index : index + 1]


def _map_state(state: RNNState, fn: Callable[[Tensor], Tensor]) -> RNNState:
    """Apply ``fn`` to h (and c): the one place that knows LSTM state is a pair."""
    if isinstance(state, tuple):
        return fn(state[0]), fn(state[1])
    return fn(state)


def _chunk_initial_state(carried: RNNState, bidirectional: bool, batch: int) -> RNNState:
    """Initial state for the doubled batch of ``forward_chunk``: carried forward direction, zero backward."""

    def build(t: Tensor) -> Tensor:  # t: (1, B, H) -> (directions, 2B, H)
        if bidirectional:
            t = torch.cat([t, torch.zeros_like(t)])
        return torch.cat([t, t], dim=1)

    return _map_state(carried, build)


def _int8_lstm(layer: nn.Module) -> bool:
    """A dynamic-int8 one-layer LSTM (``asr export --quantize int8``): its packed weights run per direction too."""
    return isinstance(layer, Int8LSTM) and layer.num_layers == 1


def _splits_directions(layer: nn.Module) -> TypeGuard[nn.RNNBase]:
    """One-layer cells whose directions :func:`_run_direction` can drive one at a time.

    Float LSTM/GRU/RNN and dynamic-int8 LSTM. The int8 GRU keeps packed weights that only its
    own ``forward`` runs; for it ``forward_chunk`` falls back to one call over a doubled batch.
    """
    if _int8_lstm(layer):
        return True
    return type(layer) in (nn.LSTM, nn.GRU, nn.RNN) and isinstance(layer, nn.RNNBase) and layer.num_layers == 1


def _run_direction(
    layer: nn.RNNBase, x: Tensor, state: RNNState | None, *, reverse: bool, lens: Tensor | None = None
) -> tuple[Tensor, RNNState]:
    """One direction of a one-layer ``layer`` over rows ``x (B, T, H_in)`` → ``(B, T, H)``.

    Rows are full length unless ``lens (B,)`` is given; then the reverse direction reads each
    row from its own last valid frame (padding is visited after it, and its outputs are junk).

    The same fused kernel ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` call, given one direction's
    weights: streaming needs the forward direction's state at the chunk end and the backward
    direction over chunk + look-ahead, and running them separately costs half the doubled batch.
    An int8 LSTM runs ``torch.quantized_lstm`` on one direction's packed weights the same way.
    """
    suffix = "_reverse" if reverse else ""
    order = None
    if reverse and lens is not None:
        steps = torch.arange(x.size(1), device=x.device)[None]  # (1, T)
        last = lens.to(x.device)[:, None] - 1
        order = torch.where(steps <= last, last - steps, steps)[:, :, None]  # its own inverse
        x = x.gather(1, order.expand(-1, -1, x.size(2)))
    elif reverse:
        x = x.flip(1)
    zeros = x.new_zeros(1, x.size(0), layer.hidden_size)
    final: RNNState
    if _int8_lstm(layer):
        h0, c0 = state if isinstance(state, tuple) else (zeros, zeros)
        values: Any = layer._all_weight_values  # [forward, reverse] packed (weight, bias) per direction
        packed = [values[int(reverse)].param]
        out, h, c = torch.quantized_lstm(
            x, (h0, c0), packed, layer.bias, 1, 0.0, False, False, True, dtype=layer.dtype, use_dynamic=True
        )
        final = (h, c)
    elif isinstance(layer, nn.LSTM):
        weights = _direction_weights(layer, suffix)
        h0, c0 = state if isinstance(state, tuple) else (zeros, zeros)
        out, h, c = _VF.lstm(x, (h0, c0), weights, layer.bias, 1, 0.0, False, False, True)
        final = (h, c)
    else:
        weights = _direction_weights(layer, suffix)
        run = _VF.gru if isinstance(layer, nn.GRU) else _VF.rnn_tanh if layer.nonlinearity == "tanh" else _VF.rnn_relu
        h0 = state if isinstance(state, Tensor) else zeros
        out, final = run(x, h0, weights, layer.bias, 1, 0.0, False, False, True)
    if order is not None:
        return out.gather(1, order.expand(-1, -1, out.size(2))), final
    return (out.flip(1) if reverse else out), final


def _direction_weights(layer: nn.RNNBase, suffix: str) -> list[Tensor]:
    kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if layer.bias else ("weight_ih", "weight_hh")
    return [getattr(layer, f"{kind}_l0{suffix}") for kind in kinds]


def _chunk_layer(
    layer: nn.RNNBase,
    x: Tensor,
    num_out: int,
    carried: RNNState | None,
    valid: Tensor | None = None,
    *,
    top: bool = False,
) -> tuple[Tensor, RNNState]:
    """One LC-BLSTM layer over ``x (B, chunk + right, H_in)``: outputs and the forward state at the chunk end.

    The forward direction runs over the chunk from the carried state, then on over the
    look-ahead from the chunk-end state (which is what is kept); the backward direction runs
    over chunk + look-ahead from zero. The ``top`` layer's look-ahead outputs feed nothing, so
    it returns only the chunk's ``num_out`` frames and skips the forward pass over the look-ahead.
    """
    forward, final = _run_direction(layer, x[:, :num_out], carried, reverse=False)
    if x.size(1) > num_out and not top:
        forward = torch.cat([forward, _run_direction(layer, x[:, num_out:], final, reverse=False)[0]], dim=1)
    if not layer.bidirectional:
        return forward, final
    backward = _run_direction(layer, x, None, reverse=True, lens=valid)[0]
    return torch.cat([forward, backward[:, : forward.size(1)]], dim=-1), final


class RNNEncoder(nn.Module):
    """``feats (B, T, F)`` + ``feat_lens`` → ``enc (B, T', D)`` + ``enc_lens``, ``T' = ceil(T / factor)``.

    ``D`` (``output_dim``) is ``hidden_size`` times the number of directions. Between layers:
    dropout, then (when ``projection_size > 0``) a linear projection to ``projection_size``,
    which shrinks the next layer's input matmul and hence training cost.
    """

    def __init__(self, cfg: EncoderConfig, input_dim: int) -> None:
        super().__init__()
        if cfg.num_layers < 1 or cfg.hidden_size < 1:
            raise ValueError(f"encoder needs num_layers >= 1 and hidden_size >= 1, got {cfg}")
        low, high = cfg.chunk_train_frames
        if not 1 <= low <= high:
            raise ConfigError(
                f"model.encoder.chunk_train_frames must be [low, high] with 1 <= low <= high, got {low}, {high}"
            )
        self.cfg = cfg
        directions = 2 if cfg.bidirectional else 1
        layer_out = cfg.hidden_size * directions
        self.subsampling = build_subsampling(cfg, input_dim, cfg.hidden_size)
        self.layers = nn.ModuleList()
        self.projections = nn.ModuleList()
        in_size = cfg.hidden_size
        for index in range(cfg.num_layers):
            self.layers.append(_build_rnn(cfg.rnn_type, in_size, cfg.hidden_size, cfg.bidirectional))
            in_size = layer_out
            if cfg.projection_size > 0 and index < cfg.num_layers - 1:
                self.projections.append(nn.Linear(layer_out, cfg.projection_size))
                in_size = cfg.projection_size
        self.dropout = nn.Dropout(cfg.dropout)
        self._output_dim = layer_out

    @property
    def output_dim(self) -> int:
        """D, the size of each encoder output frame."""
        return self._output_dim

    @property
    def subsampling_factor(self) -> int:
        """Feature frames per encoder frame (the encoder frame shift is hop × this)."""
        return self.cfg.subsampling_factor

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Encode a padded batch; output frames at or past ``enc_lens`` are 0.

        In training, with probability ``chunk_train_prob`` the batch is encoded latency-controlled
        (see :meth:`_forward_chunked`), otherwise with full context; evaluation is always full context.
        """
        if feats.size(0) == 0 or int(feat_lens.min()) < 1:
            raise ValueError("every utterance needs at least one feature frame")
        chunked = self.training and self.cfg.bidirectional and self.cfg.chunk_train_prob > 0.0
        if chunked and float(torch.rand(())) < self.cfg.chunk_train_prob:
            low, high = self.cfg.chunk_train_frames
            return self._forward_chunked(feats, feat_lens, int(torch.randint(low, high + 1, ())))
        x, enc_lens = self.subsampling(feats, feat_lens)  # (B, T', H)
        packed = pack_padded_sequence(x, enc_lens.cpu(), batch_first=True, enforce_sorted=False)
        for index, rnn in enumerate(self.layers):
            packed, _ = rnn(packed)
            if index < len(self.layers) - 1:
                packed = _map_packed(packed, self.dropout)
                if self.projections:
                    packed = _map_packed(packed, self.projections[index])
        enc, _ = pad_packed_sequence(packed, batch_first=True, total_length=x.size(1))  # (B, T', D)
        return enc, enc_lens

    def _forward_chunked(self, feats: Tensor, feat_lens: Tensor, chunk_frames: int) -> tuple[Tensor, Tensor]:
        """LC-BLSTM training pass: the padded batch streamed through :meth:`forward_chunk`, chunk by chunk.

        Training runs the very code streaming inference runs, so the model learns exactly the
        context it will have: each chunk's look-ahead frames are re-encoded inside that chunk's
        segment at every layer, and the subsampling sees the same segment edges. (A parallel
        shortcut that takes upper layers' look-ahead from the next chunk's own pass gives them
        more context than inference has, and a model trained that way did not stream better.)
        ``chunk_frames`` is rounded up to the subsampling factor; the loop is over chunks of the
        longest utterance, each a batched forward, and shorter rows are handled by lengths.
        """
        factor = self.subsampling_factor
        chunk = -(-chunk_frames // factor) * factor
        right = self.cfg.chunk_right_context_frames
        num_frames = feats.size(1)
        state = EncoderChunkState()
        outputs = []
        for start in range(0, num_frames, chunk):
            end = min(start + chunk, num_frames)
            out, state = self.forward_chunk(
                feats[:, start:end], feats[:, end : min(end + right, num_frames)], state, valid=feat_lens - start
            )
            outputs.append(out)
        enc_lens = subsampled_lengths(feat_lens, factor)
        enc = torch.cat(outputs, dim=1)
        return enc * time_mask(enc_lens, enc.size(1))[:, :, None].to(enc.dtype), enc_lens

    @property
    def chunk_row_lengths(self) -> bool:
        """Whether :meth:`forward_chunk` accepts per-row ``valid`` lengths (float layers; not int8 twins)."""
        return all(_splits_directions(layer) for layer in self.layers)

    def forward_chunk(
        self, feats: Tensor, right_feats: Tensor, state: EncoderChunkState, *, valid: Tensor | None = None
    ) -> tuple[Tensor, EncoderChunkState]:
        """Encode one chunk for latency-controlled streaming: ``feats (B, T_c, F)`` → ``(B, ceil(T_c / factor), D)``.

        ``right_feats (B, T_r, F)`` are look-ahead frames: they feed the backward direction and
        are not consumed (pass them again as the start of the next chunk). ``T_c`` must be a
        multiple of the subsampling factor except in the last chunk. Start with
        ``EncoderChunkState()``. With the whole rest of the utterance as right context every
        chunk equals the offline ``forward`` exactly; a shorter right context trades accuracy
        for latency. All B streams must use the same chunk and right-context sizes.

        ``valid (B,)``, for padded training batches: feature frames of each row from the chunk's
        start to its utterance's end (may exceed the segment, or be <= 0 past the end). The
        backward direction then starts at each row's real end, as it does in a live stream.
        """
        factor = self.subsampling_factor
        batch = feats.size(0)
        num_out = -(-feats.size(1) // factor)
        if feats.size(1) == 0:
            raise ValueError("forward_chunk needs at least one feature frame in the chunk")
        if right_feats.size(1) and feats.size(1) % factor:
            raise ValueError(f"chunk of {feats.size(1)} frames is not a multiple of the subsampling factor {factor}")
        x = subsampled = self._subsample_chunk(feats, right_feats, state, valid)  # (B, chunk + right frames, H)
        enc_valid = None if valid is None else subsampled_lengths(valid.clamp(min=1), factor).clamp(max=x.size(1))
        new_states: list[RNNState] = []
        for index, layer in enumerate(self.layers):
            bidirectional = bool(layer.bidirectional)  # nn.RNNBase, or its dynamic-int8 twin
            carried = state.forward_states
            if _splits_directions(layer):
                top = index == len(self.layers) - 1
                x, final = _chunk_layer(layer, x, num_out, carried[index] if carried else None, enc_valid, top=top)
                new_states.append(final)
            else:
                if valid is not None:
                    raise ValueError("per-row lengths (chunked training) need float RNN layers")
                # int8 layers: row B + b repeats row b cut at the chunk end; its forward state is carried.
                lens = torch.tensor([x.size(1)] * batch + [num_out] * batch)
                initial = _chunk_initial_state(carried[index], bidirectional, batch) if carried else None
                packed = pack_padded_sequence(torch.cat([x, x]), lens, batch_first=True, enforce_sorted=False)
                packed, final = layer(packed, initial)
                out, _ = pad_packed_sequence(packed, batch_first=True, total_length=x.size(1))  # (2B, frames, D)
                new_states.append(_map_state(final, lambda t: t[:1, batch:]))
                x = out[:batch]
            if index < len(self.layers) - 1:
                x = self.dropout(x)
                if self.projections:
                    x = self.projections[index](x)
        new_state = EncoderChunkState(left_feats=feats[:, max(0, feats.size(1) - factor) :], forward_states=new_states)
        if valid is None and right_feats.size(1) and right_feats.size(1) % factor == 0:
            new_state.right_feats, new_state.right_sub = right_feats, subsampled[:, num_out:]
        return x[:, :num_out], new_state

    def _subsample_chunk(
        self, feats: Tensor, right_feats: Tensor, state: EncoderChunkState, valid: Tensor | None
    ) -> Tensor:
        """Subsampled frames of chunk + look-ahead, ``(B, ceil(T_c / factor) + ceil(T_r / factor), H)``.

        The subsampling runs over ``[left context, feats, right_feats]``; `factor` previous feature
        frames cover the conv receptive field's left extent (factor − 1). When the chunk starts with
        the previous look-ahead (as streaming passes it), those frames' subsampled outputs are taken
        from the state instead: a segment whose length is a multiple of the factor never reads the
        convs' right padding, so they are exactly what recomputing them would give, and at 320 ms
        chunks + 160 ms look-ahead that skips a third of the subsampling's work.
        """
        factor = self.subsampling_factor
        cached, reused = state.right_feats, state.right_sub
        if (
            valid is None
            and cached is not None
            and reused is not None
            and factor <= cached.size(1) <= feats.size(1)
            and torch.equal(feats[:, : cached.size(1)], cached)
        ):
            done = cached.size(1)
            rest = torch.cat([feats[:, done - factor :], right_feats], dim=1)
            if rest.size(1) == factor:
                return reused
            new, _ = self.subsampling(rest, torch.full((rest.size(0),), rest.size(1), device=rest.device))
            return torch.cat([reused, new[:, 1:]], dim=1)
        left = state.left_feats if state.left_feats is not None else feats[:, :0]
        segment = torch.cat([left, feats, right_feats], dim=1)
        seg_valid = torch.full((feats.size(0),), segment.size(1), device=feats.device)
        if valid is not None:
            seg_valid = (valid.to(feats.device) + left.size(1)).clamp(1, segment.size(1))
        x, _ = self.subsampling(segment, seg_valid)
        return x[:, left.size(1) // factor :]
