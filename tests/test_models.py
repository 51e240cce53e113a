"""Subsampling, RNN encoder, CTC head, attention decoder and the joint model."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Literal

import pytest
import torch

from asr.config import DecoderConfig, EncoderConfig, ModelConfig
from asr.errors import ConfigError
from asr.models.asr_model import build_model
from asr.models.ctc_head import CTCHead
from asr.models.decoder import EOS_ID, AttentionDecoder
from asr.models.encoder import EncoderChunkState, RNNEncoder
from asr.models.lm import RNNLM
from asr.models.subsampling import ConvSubsampling, FrameStacking, subsampled_lengths

RNNType = Literal["lstm", "gru", "rnn"]
Subsampling = Literal["conv", "stack"]

NUM_MELS = 12
VOCAB = 9

TINY_ENCODER = EncoderConfig(
    num_layers=2, hidden_size=16, dropout=0.0, subsampling_factor=4, subsampling_channels=4, projection_size=0
)
TINY_DECODER = DecoderConfig(
    enabled=True, embed_dim=8, hidden_size=16, attention_dim=8, location_channels=3, location_kernel=5, dropout=0.0
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _batch(feat_lens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features with random (not zero) padding, so leaks would show."""
    return torch.randn(len(feat_lens), max(feat_lens), NUM_MELS), torch.tensor(feat_lens)


def _tokens(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    token_lens = torch.tensor([len(r) for r in rows])
    tokens = torch.full((len(rows), int(token_lens.max())), -1)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
    return tokens, token_lens


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 6, 8])
def test_subsampling_output_length_is_ceil_division_for_lengths_1_to_50(factor: int) -> None:
    conv = ConvSubsampling(NUM_MELS, 8, factor, channels=2)
    stack = FrameStacking(NUM_MELS, 8, factor)
    for length in range(1, 51):
        expected = -(-length // factor)
        assert subsampled_lengths(torch.tensor([length]), factor).item() == expected
        for module in (conv, stack):
            out, out_lens = module(torch.randn(1, length, NUM_MELS), torch.tensor([length]))
            assert out.shape == (1, expected, 8)
            assert out_lens.tolist() == [expected]


@pytest.mark.parametrize("subsampling", ["conv", "stack"])
@pytest.mark.parametrize("rnn_type", ["lstm", "gru", "rnn"])
def test_encoder_runs_forward_and_backward_with_exact_lengths(rnn_type: RNNType, subsampling: Subsampling) -> None:
    cfg = dataclasses.replace(TINY_ENCODER, rnn_type=rnn_type, subsampling=subsampling)
    encoder = RNNEncoder(cfg, NUM_MELS)
    feats, feat_lens = _batch([23, 9, 1])
    enc, enc_lens = encoder(feats, feat_lens)
    assert enc.shape == (3, 6, encoder.output_dim) and encoder.output_dim == 32
    assert torch.equal(enc_lens, subsampled_lengths(feat_lens, 4))
    assert torch.all(enc[1, 3:] == 0) and torch.all(enc[2, 1:] == 0)
    enc.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("subsampling", ["conv", "stack"])
@pytest.mark.parametrize("rnn_type", ["lstm", "gru", "rnn"])
def test_utterance_encodes_the_same_alone_and_padded_in_a_batch(
    rnn_type: RNNType, subsampling: Subsampling, bidirectional: bool
) -> None:
    cfg = dataclasses.replace(
        TINY_ENCODER, rnn_type=rnn_type, subsampling=subsampling, bidirectional=bidirectional, projection_size=8
    )
    encoder = RNNEncoder(cfg, NUM_MELS).eval()
    feats, feat_lens = _batch([30, 13, 5])
    enc, enc_lens = encoder(feats, feat_lens)
    for row in range(3):
        length = int(feat_lens[row])
        alone, alone_lens = encoder(feats[row : row + 1, :length], feat_lens[row : row + 1])
        assert alone_lens.item() == enc_lens[row].item()
        torch.testing.assert_close(enc[row, : int(enc_lens[row])], alone[0], rtol=1e-5, atol=1e-5)


def test_projection_sits_between_layers_only() -> None:
    cfg = dataclasses.replace(TINY_ENCODER, num_layers=3, projection_size=8)
    encoder = RNNEncoder(cfg, NUM_MELS)
    assert [p.out_features for p in encoder.projections] == [8, 8]
    assert [layer.input_size for layer in encoder.layers] == [16, 8, 8]
    enc, _ = encoder(*_batch([12, 8]))
    assert enc.shape[-1] == encoder.output_dim == 32


def test_ctc_loss_is_float32_under_autocast_and_ignores_padding() -> None:
    head = CTCHead(6, VOCAB)
    enc = torch.randn(2, 7, 6)
    tokens, token_lens = _tokens([[3, 4, 4], [5]])
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        log_probs = head(enc)
        loss = head.loss(log_probs, torch.tensor([7, 4]), tokens, token_lens)
    assert log_probs.dtype == torch.float32 and loss.dtype == torch.float32
    first = head.loss(log_probs[:1], torch.tensor([7]), tokens[:1], token_lens[:1])
    second = head.loss(log_probs[1:, :4], torch.tensor([4]), tokens[1:, :1], token_lens[1:])
    torch.testing.assert_close(loss, (first + second) / 2)


def _decoder_and_encoding(num_frames: int = 11) -> tuple[AttentionDecoder, torch.Tensor, torch.Tensor]:
    decoder = AttentionDecoder(TINY_DECODER, enc_dim=10, vocab_size=VOCAB).eval()
    return decoder, torch.randn(1, num_frames, 10), torch.tensor([num_frames])


def test_incremental_score_equals_teacher_forced_forward() -> None:
    decoder, enc, enc_lens = _decoder_and_encoding()
    tokens_in = torch.tensor([[EOS_ID, 4, 7, 3, 3, 8]])
    with torch.no_grad():
        expected = torch.log_softmax(decoder(enc, enc_lens, tokens_in), dim=-1)[0]  # (U, V)
        state = decoder.init_state(enc, enc_lens)
        for position in range(tokens_in.size(1)):
            log_probs, state = decoder.score(tokens_in[:, : position + 1], state)
            torch.testing.assert_close(log_probs[0], expected[position], rtol=0, atol=1e-5)


def test_select_duplicates_and_reorders_beams() -> None:
    decoder, enc, enc_lens = _decoder_and_encoding()
    prefixes = torch.tensor([[EOS_ID, 2, 5, 6], [EOS_ID, 2, 7, 7]])
    with torch.no_grad():
        teacher = torch.log_softmax(decoder(enc.expand(2, -1, -1), enc_lens.expand(2), prefixes), dim=-1)
        state = decoder.init_state(enc, enc_lens)
        log_probs, state = decoder.score(prefixes[:1, :1], state)
        state = decoder.select(state, torch.tensor([0, 0]))  # both beams extend <sos> 2
        log_probs, state = decoder.score(prefixes[:, :2], state)
        for position in (2, 3):
            log_probs, state = decoder.score(prefixes[:, : position + 1], state)
        state = decoder.select(state, torch.tensor([1, 0]))
        swapped, _ = decoder.score(prefixes[[1, 0]], state)
    torch.testing.assert_close(log_probs, teacher[:, 3], rtol=0, atol=1e-5)
    assert state.enc.size(0) == 1  # the encoder output is shared, never copied per beam
    assert swapped.shape == (2, VOCAB)


def test_attention_gives_no_weight_to_padding_and_decoder_is_padding_invariant() -> None:
    decoder = AttentionDecoder(TINY_DECODER, enc_dim=10, vocab_size=VOCAB).eval()
    enc = torch.randn(2, 9, 10)
    enc_lens = torch.tensor([9, 4])
    tokens_in = torch.tensor([[EOS_ID, 3, 4], [EOS_ID, 5, 6]])
    with torch.no_grad():
        batched = decoder(enc, enc_lens, tokens_in)
        alone = decoder(enc[1:, :4], enc_lens[1:], tokens_in[1:])
        state = decoder.init_state(enc[1:], enc_lens[1:])
        _, state = decoder.score(tokens_in[1:, :1], state)
    torch.testing.assert_close(batched[1], alone[0], rtol=1e-5, atol=1e-5)
    assert torch.all(state.weights[0, 4:] == 0)
    torch.testing.assert_close(state.weights.sum(), torch.tensor(1.0))


def test_decoder_loss_uses_eos_targets_and_ignores_padding() -> None:
    decoder = AttentionDecoder(dataclasses.replace(TINY_DECODER, label_smoothing=0.0), 10, VOCAB).eval()
    enc = torch.randn(2, 6, 10)
    enc_lens = torch.tensor([6, 6])
    tokens, token_lens = _tokens([[3, 4, 5], [6]])
    with torch.no_grad():
        loss = decoder.loss(enc, enc_lens, tokens, token_lens)
        log_probs = torch.log_softmax(decoder(enc[1:], enc_lens[1:], torch.tensor([[EOS_ID, 6]])), dim=-1)[0]
        second = -(log_probs[0, 6] + log_probs[1, EOS_ID])
        first = decoder.loss(enc[:1], enc_lens[:1], tokens[:1], token_lens[:1])
    torch.testing.assert_close(loss, (first + second) / 2)


def _joint_config(ctc_weight: float) -> ModelConfig:
    return ModelConfig(encoder=TINY_ENCODER, decoder=TINY_DECODER, ctc_weight=ctc_weight)


def test_joint_loss_is_finite_and_gradients_reach_every_parameter() -> None:
    model = build_model(_joint_config(0.5), NUM_MELS, VOCAB)
    feats, feat_lens = _batch([40, 25])
    tokens, token_lens = _tokens([[3, 4, 5], [6, 7]])
    loss = model(feats, feat_lens, tokens, token_lens)
    assert loss.ctc is not None and loss.attention is not None
    torch.testing.assert_close(loss.total, 0.5 * loss.ctc + 0.5 * loss.attention)
    assert torch.isfinite(loss.total)
    loss.total.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_attention_only_training_keeps_ctc_head_trained_but_off_the_encoder() -> None:
    model = build_model(_joint_config(0.0), NUM_MELS, VOCAB)
    feats, feat_lens = _batch([40, 25])
    tokens, token_lens = _tokens([[3, 4, 5], [6, 7]])
    loss = model(feats, feat_lens, tokens, token_lens)
    assert loss.ctc is not None and loss.attention is not None
    loss.ctc.backward()
    assert model.ctc_head.proj.weight.grad is not None
    assert all(p.grad is None for p in model.encoder.parameters())


def test_ctc_only_model_has_no_decoder() -> None:
    model = build_model(ModelConfig(encoder=TINY_ENCODER), NUM_MELS, VOCAB)
    assert model.decoder is None and model.subsampling_factor == 4
    loss = model(*_batch([16]), *_tokens([[3, 4]]))
    assert loss.attention is None and loss.total is loss.ctc


@pytest.mark.parametrize(("enabled", "ctc_weight"), [(True, 1.0), (False, 0.5)])
def test_contradictory_ctc_weight_and_decoder_raise_config_error(enabled: bool, ctc_weight: float) -> None:
    decoder = dataclasses.replace(TINY_DECODER, enabled=enabled)
    cfg = ModelConfig(encoder=TINY_ENCODER, decoder=decoder, ctc_weight=ctc_weight)
    with pytest.raises(ConfigError, match="ctc_weight"):
        build_model(cfg, NUM_MELS, VOCAB)


def test_tiny_ctc_model_overfits_one_batch() -> None:
    # Frame stacking escapes the all-blank plateau in the fewest steps.
    encoder = dataclasses.replace(TINY_ENCODER, hidden_size=32, subsampling="stack")
    model = build_model(ModelConfig(encoder=encoder), NUM_MELS, VOCAB)
    feats, feat_lens = _batch([48, 40, 32])
    tokens, token_lens = _tokens([[3, 4, 5, 6], [7, 3, 8], [6, 5]])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = model(feats, feat_lens, tokens, token_lens).total
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    model.eval()
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, feat_lens)
        best = model.ctc_log_probs(enc).argmax(dim=-1)
    decoded = []
    for row, length in zip(best, enc_lens, strict=True):
        frames = row[: int(length)].tolist()
        decoded.append([t for i, t in enumerate(frames) if t != 0 and (i == 0 or frames[i - 1] != t)])
    assert decoded == [[3, 4, 5, 6], [7, 3, 8], [6, 5]]


def test_rnnlm_incremental_score_equals_full_sequence_and_select_follows_beams() -> None:
    lm = RNNLM(VOCAB, embed_dim=8, hidden_size=16, num_layers=2, dropout=0.0).eval()
    prefixes = torch.tensor([[EOS_ID, 3, 4, 5], [EOS_ID, 6, 6, 2]])
    with torch.no_grad():
        full, _ = lm(prefixes)
        expected = torch.log_softmax(full, dim=-1)  # (2, U, V)
        state = lm.init_state(torch.zeros(1, 5, 4), torch.tensor([5]))
        state = lm.select(state, torch.tensor([0, 0]))
        for position in range(prefixes.size(1)):
            log_probs, state = lm.score(prefixes[:, : position + 1], state)
            torch.testing.assert_close(log_probs, expected[:, position], rtol=0, atol=1e-5)
        swapped, _ = lm.score(prefixes[[1, 0]], lm.select(state, torch.tensor([1, 0])))
        unswapped, _ = lm.score(prefixes, state)
    torch.testing.assert_close(swapped, unswapped[[1, 0]])


def test_rnnlm_learns_a_sentence() -> None:
    lm = RNNLM(VOCAB, embed_dim=8, hidden_size=16, num_layers=1, dropout=0.0)
    tokens, token_lens = _tokens([[3, 4, 5, 6], [7, 8]])
    optimizer = torch.optim.Adam(lm.parameters(), lr=3e-2)
    first = lm.loss(tokens, token_lens).item()
    for _ in range(40):
        optimizer.zero_grad()
        loss = lm.loss(tokens, token_lens)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first


def _encode_in_chunks(encoder: RNNEncoder, feats: torch.Tensor, chunk: int, right: int | None) -> torch.Tensor:
    """Stream ``feats (1, T, F)``; ``right=None`` gives each chunk the whole rest as look-ahead."""
    state = EncoderChunkState()
    outputs = []
    for start in range(0, feats.size(1), chunk):
        end = min(start + chunk, feats.size(1))
        right_end = feats.size(1) if right is None else min(end + right, feats.size(1))
        out, state = encoder.forward_chunk(feats[:, start:end], feats[:, end:right_end], state)
        outputs.append(out)
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize(("rnn_type", "subsampling"), [("lstm", "conv"), ("gru", "stack"), ("rnn", "conv")])
def test_forward_chunk_with_full_right_context_equals_offline(rnn_type: RNNType, subsampling: Subsampling) -> None:
    cfg = dataclasses.replace(TINY_ENCODER, rnn_type=rnn_type, subsampling=subsampling, projection_size=8)
    encoder = RNNEncoder(cfg, NUM_MELS).eval()
    feats = torch.randn(1, 37, NUM_MELS)
    with torch.no_grad():
        offline, _ = encoder(feats, torch.tensor([37]))
        streamed = _encode_in_chunks(encoder, feats, chunk=8, right=None)
    torch.testing.assert_close(streamed, offline, rtol=1e-5, atol=1e-5)


def test_forward_chunk_limited_right_context_keeps_frame_count_and_is_exact_when_unidirectional() -> None:
    bidirectional = RNNEncoder(TINY_ENCODER, NUM_MELS).eval()
    unidirectional = RNNEncoder(dataclasses.replace(TINY_ENCODER, bidirectional=False), NUM_MELS).eval()
    feats = torch.randn(1, 37, NUM_MELS)
    with torch.no_grad():
        assert _encode_in_chunks(bidirectional, feats, chunk=8, right=4).shape == (1, 10, 32)
        offline, _ = unidirectional(feats, torch.tensor([37]))
        streamed = _encode_in_chunks(unidirectional, feats, chunk=8, right=0)
    torch.testing.assert_close(streamed, offline, rtol=1e-5, atol=1e-5)


def test_keep_freed_memory_applies_once_per_process():
    from asr import runtime

    first = runtime.keep_freed_memory()
    assert first is (sys.platform.startswith("linux") and os.environ.get("ASR_KEEP_HEAP", "1") != "0")
    assert runtime.keep_freed_memory() is first  # later calls report, never re-apply


@pytest.mark.parametrize("rnn_type", ["lstm", "gru", "rnn"])
def test_forward_chunk_direction_split_equals_the_doubled_batch_pass(
    rnn_type: RNNType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Float cells run each direction separately; int8 cells one call over a doubled batch: same numbers."""
    import asr.models.encoder as encoder_module

    encoder = RNNEncoder(dataclasses.replace(TINY_ENCODER, rnn_type=rnn_type), NUM_MELS).eval()
    feats = torch.randn(3, 41, NUM_MELS)
    with torch.no_grad():
        split = _encode_in_chunks(encoder, feats, chunk=8, right=4)
        monkeypatch.setattr(encoder_module, "_splits_directions", lambda layer: False)
        doubled = _encode_in_chunks(encoder, feats, chunk=8, right=4)
    torch.testing.assert_close(split, doubled, rtol=1e-5, atol=1e-5)


def test_int8_lstm_streams_one_direction_at_a_time_like_its_doubled_batch_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """``asr export --quantize int8`` models stream per direction too; dynamic activation scales differ slightly."""
    import asr.models.encoder as encoder_module
    from asr.quantization import apply_quantization

    encoder = RNNEncoder(dataclasses.replace(TINY_ENCODER, rnn_type="lstm"), NUM_MELS).eval()
    int8 = apply_quantization(encoder, "int8_dynamic")
    assert all(encoder_module._splits_directions(layer) for layer in int8.layers)
    feats = torch.randn(3, 41, NUM_MELS)
    with torch.no_grad():
        split = _encode_in_chunks(int8, feats, chunk=8, right=4)
        monkeypatch.setattr(encoder_module, "_splits_directions", lambda layer: False)
        doubled = _encode_in_chunks(int8, feats, chunk=8, right=4)
    torch.testing.assert_close(split, doubled, rtol=0.0, atol=0.02)
    assert (split - doubled).abs().mean() < 2e-3


@pytest.mark.parametrize(
    ("rnn_type", "subsampling", "right"),
    [("lstm", "conv", 4), ("gru", "conv", 4), ("lstm", "conv", 6), ("lstm", "stack", 4), ("rnn", "stack", 0)],
)
def test_chunked_training_pass_encodes_each_row_exactly_as_a_live_stream(
    rnn_type: RNNType, subsampling: Subsampling, right: int
) -> None:
    """LC-BLSTM training must see the context streaming inference has, padding rows included."""
    cfg = dataclasses.replace(
        TINY_ENCODER, rnn_type=rnn_type, subsampling=subsampling, chunk_right_context_frames=right
    )
    encoder = RNNEncoder(cfg, NUM_MELS).eval()  # eval: no dropout, so the two passes are comparable
    lengths = [41, 23, 9]
    feats = torch.randn(len(lengths), max(lengths), NUM_MELS)
    for row, length in enumerate(lengths):
        feats[row, length:] = 0.0
    with torch.no_grad():
        enc, enc_lens = encoder._forward_chunked(feats, torch.tensor(lengths), chunk_frames=8)
        for row, length in enumerate(lengths):
            alone = _encode_in_chunks(encoder, feats[row : row + 1, :length], chunk=8, right=right)
            assert int(enc_lens[row]) == alone.size(1)
            torch.testing.assert_close(enc[row : row + 1, : alone.size(1)], alone, rtol=1e-5, atol=1e-5)
            assert not enc[row, alone.size(1) :].any()
