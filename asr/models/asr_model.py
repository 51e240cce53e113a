"""The acoustic model: RNN encoder + CTC head + optional attention decoder, trained jointly.

``forward`` *is* the training objective (so DDP sees every parameter used in one call, as in
wenet and ESPnet); ``encode`` and ``ctc_log_probs`` are the inference surface, and the
decoder's ``init_state / score / select`` serve the search. All hyper-parameters come from
:class:`~asr.config.ModelConfig`, which the checkpoint stores, so ``build_model`` rebuilds
the exact architecture at load time.

How ``ctc_weight`` (λ) is used, ``total = λ·CTC + (1 − λ)·attention``:

* λ = 1: CTC only. The decoder must be disabled (an enabled decoder would never be trained).
* 0 < λ < 1: joint training (Kim et al. 2017); the decoder must be enabled.
* λ = 0: the attention loss alone trains the encoder. The CTC head still exists, because
  timestamps, streaming and joint search read CTC posteriors, so it is trained on a
  gradient-stopped copy of the encoder output: ``total = attention + CTC(head(enc.detach()))``.
  The encoder is unaffected by CTC, every parameter still gets a gradient, and ``JointLoss.ctc``
  reports that head-only loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from asr.config import ModelConfig
from asr.errors import ConfigError
from asr.models.ctc_head import CTCHead
from asr.models.decoder import AttentionDecoder
from asr.models.encoder import EncoderChunkState, RNNEncoder
from asr.models.layer_mix import LayerMix


@dataclass
class JointLoss:
    """Loss terms of one batch, each a per-utterance mean (sum over the batch / B)."""

    total: Tensor  # what the trainer back-propagates
    ctc: Tensor | None  # None when not computed
    attention: Tensor | None  # None for CTC-only models


class AsrModel(nn.Module):
    """``feats (B, T, F)`` → encoder ``(B, T', D)`` → CTC log-probs ``(B, T', V)`` and/or decoder.

    When the front end delivers several layers of a pretrained encoder side by side
    (``model.frontend.layers``), a :class:`LayerMix` first reduces ``F = L·D`` to ``D``.
    """

    def __init__(self, cfg: ModelConfig, input_dim: int, vocab_size: int) -> None:
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        self.input_dim = input_dim
        self.vocab_size = vocab_size
        num_layers = len(cfg.frontend.layers) if cfg.frontend.type == "whisper_encoder" else 1
        self.layer_mix = LayerMix(num_layers) if num_layers > 1 else None
        self.encoder = RNNEncoder(cfg.encoder, input_dim // num_layers)
        self.ctc_head = CTCHead(self.encoder.output_dim, vocab_size)
        self.decoder: AttentionDecoder | None = (
            AttentionDecoder(cfg.decoder, self.encoder.output_dim, vocab_size) if cfg.decoder.enabled else None
        )

    @property
    def subsampling_factor(self) -> int:
        """Feature frames per encoder frame; the encoder frame shift is the feature hop × this."""
        return self.encoder.subsampling_factor

    def encode(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        """``feats (B, T, F)``, ``feat_lens (B,)`` → ``enc (B, T', D)``, ``enc_lens (B,)``."""
        if self.layer_mix is not None:
            feats = self.layer_mix(feats)
        enc, enc_lens = self.encoder(feats, feat_lens)
        return enc, enc_lens

    def encode_chunk(
        self, feats: Tensor, right_feats: Tensor, state: EncoderChunkState, *, valid: Tensor | None = None
    ) -> tuple[Tensor, EncoderChunkState]:
        """Streaming form of :meth:`encode`: :meth:`RNNEncoder.forward_chunk` after the layer mix."""
        if self.layer_mix is not None:
            feats, right_feats = self.layer_mix(feats), self.layer_mix(right_feats)
        return self.encoder.forward_chunk(feats, right_feats, state, valid=valid)

    def ctc_log_probs(self, enc: Tensor) -> Tensor:
        """CTC log-posteriors ``(B, T', V)``, float32."""
        log_probs: Tensor = self.ctc_head(enc)
        return log_probs

    def forward(self, feats: Tensor, feat_lens: Tensor, tokens: Tensor, token_lens: Tensor) -> JointLoss:
        """Training loss for ``tokens (B, U)`` padded with -1 (no blank or EOS inside)."""
        weight = self.cfg.ctc_weight
        enc, enc_lens = self.encode(feats, feat_lens)
        ctc_input = enc.detach() if weight == 0.0 else enc
        ctc = self.ctc_head.loss(self.ctc_log_probs(ctc_input), enc_lens, tokens, token_lens)
        if self.decoder is None:
            return JointLoss(total=ctc, ctc=ctc, attention=None)
        attention = self.decoder.loss(enc, enc_lens, tokens, token_lens)
        total = attention + ctc if weight == 0.0 else weight * ctc + (1.0 - weight) * attention
        return JointLoss(total=total, ctc=ctc, attention=attention)


def _check_config(cfg: ModelConfig) -> None:
    if cfg.decoder.enabled and cfg.ctc_weight >= 1.0:
        raise ConfigError(
            "model.decoder.enabled is true but model.ctc_weight is 1.0, so the decoder would never be trained; "
            "set model.ctc_weight below 1 (0.3 is typical for joint CTC/attention) or disable the decoder"
        )
    if not cfg.decoder.enabled and cfg.ctc_weight < 1.0:
        raise ConfigError(
            f"model.ctc_weight is {cfg.ctc_weight} but model.decoder.enabled is false, so there is no attention "
            "loss to weight against CTC; set model.decoder.enabled: true or model.ctc_weight: 1.0"
        )


def build_model(cfg: ModelConfig, input_dim: int, vocab_size: int) -> AsrModel:
    """Build the model described by ``cfg`` for ``input_dim`` features (F) and ``vocab_size`` (V) tokens.

    Raises ConfigError when ``ctc_weight`` and ``decoder.enabled`` contradict each other.
    """
    return AsrModel(cfg, input_dim, vocab_size)
