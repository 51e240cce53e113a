"""Fine-tuning: continue a trained model on a user's recordings, and show what it gained and forgot.

``finetune`` loads a self-contained checkpoint, checks that the user's transcripts use only
characters the model can emit (or extends its output layer), trains with the base recipe at a
lower learning rate with optional freezing of the lowest encoder layers, and evaluates before
and after on the user's dev set and, to expose forgetting, on the base model's test set. The
result is a new self-contained checkpoint whose ``metrics["finetune"]`` holds that comparison.
CMVN statistics stay the base model's: the encoder's weights were learnt on them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from asr.audio import load_audio
from asr.checkpoint import ModelBundle, build_bundle, load_checkpoint, save_checkpoint
from asr.config import ExperimentConfig, FinetuneConfig, apply_overrides, from_dict, to_dict
from asr.data.batching import collate
from asr.data.dataset import Utterance
from asr.data.manifest import ManifestEntry
from asr.errors import ConfigError
from asr.inference import Recognizer, resolve_device
from asr.tokenizer import SPECIAL_PIECES, UNK_ID, WORD_BOUNDARY, CharTokenizer, Tokenizer, normalize_text
from asr.training.evaluate import evaluate
from asr.training.trainer import load_entries, train

log = logging.getLogger(__name__)

LOSS_BATCH = 16  # utterances per forward pass when measuring dev loss


@dataclass(frozen=True)
class EvalRow:
    """One evaluation set, before and after fine-tuning."""

    name: str
    utterances: int
    wer_before: float
    wer_after: float
    loss_before: float  # mean per-utterance training loss (CTC, or the joint loss)
    loss_after: float


@dataclass
class FinetuneResult:
    model_path: Path
    steps: int
    added_chars: list[str]
    rows: list[EvalRow] = field(default_factory=list)

    def table(self) -> str:
        lines = [f"{'set':<12} {'utts':>5} {'WER before':>10} {'WER after':>10} {'loss before':>11} {'loss after':>10}"]
        for r in self.rows:
            lines.append(
                f"{r.name:<12} {r.utterances:>5} {100 * r.wer_before:>9.2f}% {100 * r.wer_after:>9.2f}% "
                f"{r.loss_before:>11.3f} {r.loss_after:>10.3f}"
            )
        return "\n".join(lines)


def unknown_characters(tokenizer: Tokenizer, texts: Iterable[str]) -> Counter[str]:
    """Characters of the normalised ``texts`` that ``tokenizer`` can only encode as ``<unk>``, with counts."""
    numbers_to_words = bool(getattr(tokenizer, "numbers_to_words", True))
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(c for c in normalize_text(text, numbers_to_words=numbers_to_words) if c != " ")
    return Counter({c: n for c, n in counts.items() if UNK_ID in tokenizer.encode(c)})


def extend_vocabulary(bundle: ModelBundle, chars: Iterable[str]) -> ModelBundle:
    """A copy of a character model that can also emit ``chars``.

    The char vocabulary is kept sorted (ids must be canonical in checkpoints), so every
    vocabulary-sized tensor (CTC output, decoder embedding and output) is re-indexed by piece.
    A new output row starts with zero weights and the lowest bias of the existing characters:
    the new character begins as the least likely one at every frame, so the model transcribes
    exactly as before until training gives it weight. New embedding rows start at the mean row.
    """
    old = bundle.tokenizer
    if not isinstance(old, CharTokenizer):
        raise ConfigError(
            "only character vocabularies can be extended; a BPE model's pieces are fixed, so remove or "
            "spell out the unknown characters in the transcripts"
        )
    old_pieces = old.pieces
    symbols = [p for p in old_pieces if p not in (*SPECIAL_PIECES, WORD_BOUNDARY)]
    tokenizer = CharTokenizer([*symbols, *chars], numbers_to_words=old.numbers_to_words)
    new = build_bundle(bundle.config, tokenizer)
    new.cmvn.load_state_dict(bundle.cmvn.state_dict())
    source = [old_pieces.index(p) if p in old_pieces else -1 for p in tokenizer.pieces]  # new id -> old id or -1
    state = bundle.model.state_dict()
    for key in ("ctc_head.proj", "decoder.output", "decoder.embedding"):
        if f"{key}.weight" in state:
            embedding = key.endswith("embedding")
            for suffix in ("weight", "bias"):
                name = f"{key}.{suffix}"
                if name in state:
                    state[name] = _reindex_rows(state[name], source, mean_fill=embedding or suffix == "bias")
    new.model.load_state_dict(state)
    new.model.eval()
    new.step, new.metrics = bundle.step, dict(bundle.metrics)
    return new


def _reindex_rows(old: torch.Tensor, source: list[int], *, mean_fill: bool) -> torch.Tensor:
    """Rows of ``old`` reordered by ``source``; rows with source -1 are new.

    New rows are zeros, except with ``mean_fill``: embeddings take the mean real-token row and
    biases the minimum real-token bias (see :func:`extend_vocabulary`).
    """
    real = old[len(SPECIAL_PIECES) :]
    fill = torch.zeros_like(old[0])
    if mean_fill:
        fill = real.min(dim=0).values if old.dim() == 1 else real.mean(dim=0)
    return torch.stack([old[i] if i >= 0 else fill for i in source])


def encoder_trainable(frozen_layers: int, num_rnn_layers: int) -> Callable[[str], bool]:
    """Predicate over parameter names: False for the ``frozen_layers`` lowest encoder layers.

    Layer 0 is the subsampling front, layer ``i + 1`` the ``i``-th RNN layer together with the
    projection that follows it. Low layers model the acoustics, which a new speaker changes
    least; freezing them keeps a small user set from overwriting them.
    """
    if not 0 <= frozen_layers <= num_rnn_layers + 1:
        raise ConfigError(
            f"freeze_encoder_layers={frozen_layers} is outside [0, {num_rnn_layers + 1}]: the encoder has the "
            f"subsampling (layer 0) and {num_rnn_layers} RNN layers (1..{num_rnn_layers})"
        )

    def layer_index(name: str) -> int | None:
        parts = name.split(".")
        if parts[0] != "encoder":
            return None
        if parts[1] == "subsampling":
            return 0
        if parts[1] in ("layers", "projections"):
            return int(parts[2]) + 1
        return None

    def trainable(name: str) -> bool:
        index = layer_index(name)
        return index is None or index >= frozen_layers

    return trainable


@torch.no_grad()
def mean_loss(bundle: ModelBundle, entries: Sequence[ManifestEntry], device: str = "cpu") -> float:
    """Mean per-utterance training loss of ``bundle`` on ``entries`` (eval mode: no dropout, no SpecAugment)."""
    if not entries:
        return float("nan")
    dev = resolve_device(device)
    model, frontend, cmvn = bundle.model.to(dev).eval(), bundle.frontend.to(dev), bundle.cmvn.to(dev)
    rate = bundle.config.audio.sample_rate
    total = 0.0
    for start in range(0, len(entries), LOSS_BATCH):
        chunk = entries[start : start + LOSS_BATCH]
        items = [
            Utterance(
                torch.from_numpy(load_audio(e.audio, rate)), torch.tensor(bundle.tokenizer.encode(e.text)), start + i
            )
            for i, e in enumerate(chunk)
        ]
        batch = collate(items)
        feats, feat_lens = frontend(batch.waves.to(dev), batch.wave_lens.to(dev))
        feats = cmvn(feats, feat_lens)
        out = model(feats, feat_lens, batch.tokens.to(dev), batch.token_lens.to(dev))
        total += float(out.total) * len(chunk)
    return total / len(entries)


def finetune_experiment(
    base: ExperimentConfig,
    cfg: FinetuneConfig,
    train_manifests: Sequence[str],
    dev_manifests: Sequence[str],
    overrides: Sequence[str] = (),
) -> ExperimentConfig:
    """The base model's recipe with the fine-tuning changes, then ``overrides`` (dotted ``key=value``)."""
    data = to_dict(base)
    learning_rate = cfg.learning_rate or base.training.learning_rate / 10
    changes: dict[str, Any] = {
        "name": f"{base.name}_finetuned",
        "data.train_manifests": [str(Path(m).resolve()) for m in train_manifests],
        "data.dev_manifests": [str(Path(m).resolve()) for m in dev_manifests],
        "training.learning_rate": learning_rate,
        "training.warmup_steps": cfg.warmup_steps,
        "training.max_steps": cfg.max_steps,
        "training.max_epochs": 1_000_000,  # a user set of a few utterances is many epochs
        "training.eval_every": cfg.max_steps,  # evaluate once at the end: no selection on the user's dev set
        "training.save_every": cfg.max_steps,
        "training.average_best": 1,
        "training.keep_checkpoints": 1,
        "training.early_stop_patience": 0,
        "specaugment.start_step": 0,  # the base model is past the CTC plateau that the delay protects
    }
    data = apply_overrides(data, changes)
    return from_dict(ExperimentConfig, apply_overrides(data, list(overrides)))


def _compare(
    name: str, before: ModelBundle, after: ModelBundle, entries: Sequence[ManifestEntry], device: str
) -> EvalRow:
    wer = [evaluate(Recognizer(b, device=device), entries).wer for b in (before, after)]
    loss = [mean_loss(b, entries, device) for b in (before, after)]
    return EvalRow(name, len(entries), wer[0], wer[1], loss[0], loss[1])


def finetune(
    base_model: str | Path,
    train_manifests: Sequence[str],
    dev_manifests: Sequence[str],
    out_dir: str | Path,
    cfg: FinetuneConfig = FinetuneConfig(),
    *,
    base_test: Sequence[str] = (),
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``base_model`` into ``out_dir/model.pt``; see the module docstring.

    Raises :class:`ConfigError` listing the characters the model cannot emit unless
    ``cfg.extend_vocab``; ``base_test`` manifests measure forgetting.
    """
    base = load_checkpoint(base_model)
    if base.quantization != "none":
        raise ConfigError(f"{base_model} is quantised ({base.quantization}); fine-tune the float32 model")
    experiment = finetune_experiment(base.config, cfg, train_manifests, dev_manifests, overrides)
    train_entries = load_entries(experiment.data.train_manifests, experiment, training=True)
    dev_entries = load_entries(experiment.data.dev_manifests, experiment, training=False)
    texts = {e.audio: e.text for e in [*train_entries, *dev_entries]}  # one count per recording
    unknown = unknown_characters(base.tokenizer, texts.values())
    if unknown and not cfg.extend_vocab:
        listed = ", ".join(f"{c!r} ({n}×)" for c, n in unknown.most_common())
        raise ConfigError(
            f"the transcripts use characters the model cannot emit: {listed}; fix the transcripts, "
            "or pass --extend-vocab to add them to the output layer"
        )
    init = extend_vocabulary(base, sorted(unknown)) if unknown else load_checkpoint(base_model)
    trainable = encoder_trainable(cfg.freeze_encoder_layers, base.config.model.encoder.num_layers)
    result = train(experiment, out_dir, init=init, trainable=trainable, progress=progress)
    tuned = load_checkpoint(result.model_path)
    device = experiment.training.device
    test_entries = load_entries(list(base_test), experiment, training=False)
    rows = [
        _compare(n, base, tuned, e, device) for n, e in (("user dev", dev_entries), ("base test", test_entries)) if e
    ]
    tuned.metrics["finetune"] = {
        "base_model": str(base_model),
        "steps": result.steps,
        "learning_rate": experiment.training.learning_rate,
        "freeze_encoder_layers": cfg.freeze_encoder_layers,
        "added_chars": sorted(unknown),
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    save_checkpoint(result.model_path, tuned)
    log.info("fine-tuned model: %s", result.model_path)
    return FinetuneResult(result.model_path, result.steps, sorted(unknown), rows)
