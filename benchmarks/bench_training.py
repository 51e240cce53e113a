"""Training throughput and inference real-time factor per recurrent cell, against a matmul roofline.

    .venv/bin/python -m benchmarks.bench_training [--seconds-per-utt 4] [--batch 16] [--repeats 5]

For each cell (LSTM, GRU, Elman RNN) with the shipped model's encoder size it measures, on
synthetic speech-length batches:

- training: one full step (frontend, CMVN, model forward with CTC loss, backward, clipped AdamW
  step) → audio seconds per second, and achieved GFLOP/s (FLOPs counted by
  ``torch.utils.flop_counter`` on the same step) as a fraction of a plain fp32 matmul's GFLOP/s
  measured in the same run;
- inference: audio → features → encoder → CTC greedy at batch 1 and 16 → real-time factor.

Writes the ``training`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import torch
from torch.utils.flop_counter import FlopCounterMode

from asr.config import ExperimentConfig, load_config
from asr.decoding.ctc_greedy import ctc_greedy_search_batch
from asr.features.frontend import LogMelFrontend
from asr.features.normalization import GlobalCMVN
from asr.models.asr_model import build_model
from asr.training.optim import build_optimizer
from benchmarks.report import CONFIGS, machine_line, matmul_gflops, median_time, table, update_section

VOCAB = 32


def _cfg(rnn_type: str) -> ExperimentConfig:
    base = load_config(CONFIGS / "shared_bilstm_ctc.yaml")
    encoder = dataclasses.replace(base.model.encoder, rnn_type=rnn_type, dropout=0.0)
    return dataclasses.replace(base, model=dataclasses.replace(base.model, encoder=encoder))


def _batch(batch: int, seconds: float, sample_rate: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    n = int(seconds * sample_rate)
    waves = 0.1 * torch.randn(batch, n, generator=gen)
    wave_lens = torch.full((batch,), n, dtype=torch.long)
    token_lens = torch.full((batch,), int(seconds * 12), dtype=torch.long)  # ~12 characters per second of speech
    tokens = torch.randint(3, VOCAB, (batch, int(token_lens.max())), generator=gen)
    return waves, wave_lens, tokens, token_lens


GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def recurrent_flops(model: torch.nn.Module, enc_frames: int) -> float:
    """Forward FLOPs of the recurrent layers for ``enc_frames`` (batch × T') frames.

    ``torch.utils.flop_counter`` does not see inside the fused ``aten::lstm``/``gru``/``rnn`` kernels
    (it counts 0 for them), so these are counted analytically: per frame, direction and layer,
    ``gates × 2 × H × (input + H)`` multiply-adds as FLOPs (the input and recurrent matmuls).
    """
    total = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.RNNBase):
            gates = GATES[module.mode.split("_")[0].lower()]
            directions = 2 if module.bidirectional else 1
            h, i = module.hidden_size, module.input_size
            total += gates * 2 * h * (i + h) * directions * enc_frames * module.num_layers
    return total


def bench_cell(rnn_type: str, batch: int, seconds: float, repeats: int) -> dict[str, float]:
    cfg = _cfg(rnn_type)
    frontend = LogMelFrontend(cfg.features, cfg.audio.sample_rate)
    cmvn = GlobalCMVN.identity(cfg.features.n_mels)
    model = build_model(cfg.model, cfg.features.n_mels, VOCAB)
    optimizer = build_optimizer(model, cfg.training)
    waves, wave_lens, tokens, token_lens = _batch(batch, seconds, cfg.audio.sample_rate)

    def train_step() -> None:
        with torch.no_grad():
            feats, feat_lens = frontend(waves, wave_lens)
            feats = cmvn(feats, feat_lens)
        loss = model(feats, feat_lens, tokens, token_lens).total
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.training.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    with FlopCounterMode(display=False) as counter:
        train_step()
    enc_frames = batch * math.ceil(int(seconds * 100) / cfg.model.encoder.subsampling_factor)
    flops = counter.get_total_flops() + 3 * recurrent_flops(model, enc_frames)  # backward ≈ 2 × forward
    step_s = median_time(train_step, repeats=repeats)

    model.eval()

    def infer(b: int) -> None:
        with torch.inference_mode():
            feats, feat_lens = frontend(waves[:b], wave_lens[:b])
            enc, enc_lens = model.encode(cmvn(feats, feat_lens), feat_lens)
            ctc_greedy_search_batch(model.ctc_log_probs(enc), enc_lens)

    rtf1 = median_time(lambda: infer(1), repeats=repeats) / seconds
    rtf16 = median_time(lambda: infer(batch), repeats=repeats) / (seconds * batch)
    params = sum(p.numel() for p in model.parameters())
    return {
        "audio_s_per_s": batch * seconds / step_s,
        "step_s": step_s,
        "gflops": flops / step_s / 1e9,
        "params_m": params / 1e6,
        "rtf1": rtf1,
        "rtf16": rtf16,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-per-utt", type=float, default=4.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    reference = matmul_gflops()
    rows = []
    for cell in ("lstm", "gru", "rnn"):
        r = bench_cell(cell, args.batch, args.seconds_per_utt, args.repeats)
        rows.append(
            [
                cell,
                f"{r['params_m']:.2f}",
                f"{r['audio_s_per_s']:.1f}",
                f"{r['gflops']:.1f}",
                f"{100 * r['gflops'] / reference:.0f} %",
                f"{r['rtf1']:.4f}",
                f"{r['rtf16']:.4f}",
            ]
        )
        print(cell, {k: round(v, 4) for k, v in r.items()})
    reference_after = matmul_gflops()
    body = "\n".join(
        [
            "## Training throughput and inference speed per recurrent cell",
            "",
            f"`python -m benchmarks.bench_training --batch {args.batch} --seconds-per-utt {args.seconds_per_utt}` "
            f"({machine_line()}). Encoder as in `shared_bilstm_ctc.yaml` (3 bidirectional layers, 160 units, "
            f"conv subsampling ×4), batch {args.batch} × {args.seconds_per_utt:g} s, medians of {args.repeats} "
            "after warm-up. Training step = frontend + CMVN + forward + CTC loss + backward + clip + AdamW. "
            "FLOPs: `torch.utils.flop_counter` on the same step for everything but the recurrent layers, "
            "whose fused kernels it cannot see; those are counted analytically (gates × 2·H·(in+H) per frame, "
            "direction and layer; backward = 2 × forward).",
            "",
            f"Reference: fp32 1024² matmul = **{reference:.1f} GFLOP/s** before, {reference_after:.1f} after.",
            "",
            table(
                [
                    "cell",
                    "params (M)",
                    "train audio-s/s",
                    "train GFLOP/s",
                    "of matmul rate",
                    "RTF batch 1",
                    f"RTF batch {args.batch}",
                ],
                rows,
            ),
        ]
    )
    update_section("training", body)
    print(body)


if __name__ == "__main__":
    main()
