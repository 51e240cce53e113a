"""The training loop: seeded, resumable, mixed-precision, DDP-ready.

``train(cfg, out_dir)`` writes into ``out_dir``:

- ``last.pt``: the newest checkpoint *with* training state (optimizer, scheduler, RNG, data
  position), so an interrupted run resumes exactly where it stopped;
- ``checkpoints/step_N.pt``: periodic checkpoints, the best ``keep_checkpoints`` by dev WER kept;
- ``model.pt``: the final self-contained model (the average of the best ``average_best``
  checkpoints when that is better on dev than the single best), what ``asr transcribe`` loads;
- ``metrics.jsonl``: one JSON object per log/eval event (``asr plot`` draws it).

Multi-GPU / multi-node: launch with ``torchrun``; the process group comes from its environment
(gloo on CPU, nccl on GPU), the sampler shards batches by rank and only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from asr.audio import load_audio
from asr.checkpoint import ModelBundle, build_bundle, read_payload, save_checkpoint
from asr.config import ExperimentConfig, dump_config
from asr.data.augment import WaveformAugment
from asr.data.batching import DurationBucketSampler, collate, collate_features
from asr.data.dataset import SpeechDataset
from asr.data.feature_cache import CachedFeatureDataset, FeatureCache
from asr.data.manifest import ManifestEntry, read_manifest
from asr.errors import ConfigError
from asr.features.normalization import estimate_cmvn
from asr.features.specaugment import SpecAugment
from asr.inference import Recognizer, resolve_device
from asr.runtime import keep_freed_memory
from asr.tokenizer import build_tokenizer
from asr.training.cached_features import cached_cmvn, open_feature_cache
from asr.training.evaluate import evaluate
from asr.training.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

CMVN_UTTERANCES = 1000  # enough for stable mean/std; estimating on everything only costs time


@dataclass
class TrainResult:
    model_path: Path
    steps: int
    best_dev_wer: float | None
    seconds: float


@dataclass
class _Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _init_distributed(device: torch.device) -> _Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def load_entries(paths: Sequence[str], cfg: ExperimentConfig, *, training: bool) -> list[ManifestEntry]:
    entries: list[ManifestEntry] = []
    for path in paths:
        entries.extend(read_manifest(path))
    if training:
        lo, hi = cfg.data.min_duration_s, cfg.data.max_duration_s
        kept = [e for e in entries if lo <= e.duration <= hi]
        if len(kept) < len(entries):
            log.info("skipped %d training utterances outside [%.2f, %.2f] s", len(entries) - len(kept), lo, hi)
        entries = kept
    return entries


def _autocast(device: torch.device, precision: str) -> Any:
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    """Holds the state of one run; :func:`train` is the public entry point."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        out_dir: Path,
        *,
        init: ModelBundle | None = None,
        progress: bool = True,
        trainable: Callable[[str], bool] | None = None,
    ) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.progress = progress
        if cfg.training.threads:
            torch.set_num_threads(cfg.training.threads)
        keep_freed_memory()
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.training.device)
        if cfg.training.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("training.precision fp16 needs a GPU; use bf16 or fp32 on CPU")
        self.dist = _init_distributed(self.device)
        if not cfg.data.train_manifests:
            raise ConfigError("data.train_manifests is empty; give at least one training manifest")
        self.train_entries = load_entries(cfg.data.train_manifests, cfg, training=True)
        if not self.train_entries:
            raise ConfigError("no training utterances left after the duration filter (data.min/max_duration_s)")
        self.dev_entries = load_entries(cfg.data.dev_manifests, cfg, training=False)

        if init is not None:
            # Rebuild from ``cfg`` so config changes that keep the architecture (dropout, chunked
            # LC-BLSTM training) take effect; modules read their config when they are built.
            self.bundle = build_bundle(cfg, init.tokenizer, init.cmvn)
            self.bundle.ngram_arpa = init.ngram_arpa  # a packed model's n-gram ("@model") stays with it
            self._load_init_weights(init)
        else:
            tokenizer = build_tokenizer(cfg.tokenizer, (e.text for e in self.train_entries))
            self.bundle = build_bundle(cfg, tokenizer)
        self.cache: FeatureCache | None = None
        if cfg.data.feature_cache:
            self.cache = open_feature_cache(cfg, self.bundle.frontend)
            if self.dist.is_main:
                self.bundle.frontend.to(self.device)
                self.cache.build(self.train_entries, self.bundle.frontend, cfg.audio, progress)
            if self.dist.world_size > 1:
                dist.barrier()
        if init is None and cfg.features.use_cmvn:
            self.bundle.cmvn.load_state_dict(self._estimate_cmvn().state_dict())
        self.bundle.model.to(self.device)
        self.bundle.frontend.to(self.device)
        self.bundle.cmvn.to(self.device)
        if trainable is not None:
            for name, param in self.bundle.model.named_parameters():
                param.requires_grad_(trainable(name))
        self.model: torch.nn.Module = self.bundle.model
        if self.dist.world_size > 1:
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.bundle.model, device_ids=ids, find_unused_parameters=False)

        self.optimizer = build_optimizer(self.bundle.model, cfg.training)
        self.scheduler = build_scheduler(self.optimizer, cfg.training)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.training.precision == "fp16")
        self.specaugment = SpecAugment(cfg.specaugment)
        self.dataset: SpeechDataset | CachedFeatureDataset
        if self.cache is not None:
            self.dataset = CachedFeatureDataset(
                self.train_entries, self.bundle.tokenizer, self.cache, cfg.audio.sample_rate, seed=cfg.seed
            )
        else:
            augment = WaveformAugment(cfg.data.augment, cfg.audio.sample_rate, seed=cfg.seed)
            self.dataset = SpeechDataset(self.train_entries, self.bundle.tokenizer, cfg.audio, augment=augment)
        self.sampler = DurationBucketSampler(
            self.dataset.durations,
            cfg.data.max_batch_seconds,
            shuffle=True,
            seed=cfg.seed,
            sort_first_epoch=cfg.data.sort_first_epoch,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
        )
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.evals: list[dict[str, Any]] = []  # {"step", "dev_wer", "dev_cer", "path"}
        self.stale_evals = 0

    def _load_init_weights(self, init: ModelBundle) -> None:
        """The initial model's weights; an attention decoder the config adds to a CTC model starts untrained.

        That is how a trained CTC model becomes a joint CTC/attention one (``asr finetune --set
        model.decoder.enabled=true --set model.ctc_weight=0.3``); any other change of architecture
        is refused, because the weights would not mean what they did.
        """
        try:
            missing, unexpected = self.bundle.model.load_state_dict(init.model.state_dict(), strict=False)
        except RuntimeError as exc:
            raise ConfigError(f"the overrides change the model's architecture; weights do not fit: {exc}") from exc
        added_decoder = init.model.decoder is None and all(key.startswith("decoder.") for key in missing)
        if unexpected or (missing and not added_decoder):
            raise ConfigError(
                "the overrides change the model's architecture; weights do not fit: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        if missing:
            log.info("added an untrained attention decoder (%d tensors) to the CTC model", len(missing))

    def _estimate_cmvn(self) -> Any:
        if self.cache is not None:
            dim = self.bundle.frontend.output_dim
            return cached_cmvn(self.cache, self.train_entries, dim, CMVN_UTTERANCES, self.cfg.seed)
        rng = random.Random(self.cfg.seed)
        sample = rng.sample(self.train_entries, min(CMVN_UTTERANCES, len(self.train_entries)))
        waves = (load_audio(e.audio, self.cfg.audio.sample_rate) for e in sample)
        return estimate_cmvn(self.bundle.frontend.cpu(), waves)

    # ----------------------------------------------------------------- state for exact resume
    def _training_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "torch_rng": torch.get_rng_state(),
            "evals": self.evals,
            "stale_evals": self.stale_evals,
        }

    def resume(self, path: Path) -> None:
        payload = read_payload(path)
        state = payload.get("training_state")
        if state is None:
            raise ConfigError(f"{path} has no training state to resume from; use it with `asr finetune` instead")
        self.bundle.model.load_state_dict(payload["model"])
        self.bundle.cmvn.load_state_dict(payload["cmvn"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        torch.set_rng_state(state["torch_rng"])
        self.evals, self.stale_evals = list(state["evals"]), int(state["stale_evals"])
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch)

    # ----------------------------------------------------------------------------- the loop
    def _batches(self) -> Any:
        """Yield (epoch, index-in-epoch, Batch) forever, continuing from the resume position."""
        while self.epoch < self.cfg.training.max_epochs:
            self.dataset.set_epoch(self.epoch)  # augmentation depends only on (seed, epoch, index): exact resume
            self.sampler.set_epoch(self.epoch, self.dataset.durations)  # concatenation changes them per epoch
            batches = list(self.sampler)[self.batch_in_epoch :]
            loader = torch.utils.data.DataLoader(
                self.dataset,
                batch_sampler=batches,
                collate_fn=collate if self.cache is None else collate_features,
                num_workers=self.cfg.data.num_workers,
            )
            yield from loader
            self.epoch += 1
            self.batch_in_epoch = 0

    def _loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            if batch.feats is not None and batch.feat_lens is not None:  # read from the feature cache
                feats, feat_lens = batch.feats.to(self.device).float(), batch.feat_lens.to(self.device)
            else:
                feats, feat_lens = self.bundle.frontend(batch.waves.to(self.device), batch.wave_lens.to(self.device))
            feats = self.bundle.cmvn(feats, feat_lens)
            if self.cfg.specaugment.enabled and self.step >= self.cfg.specaugment.start_step:
                generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
                feats = self.specaugment(feats, feat_lens, generator)
        with _autocast(self.device, self.cfg.training.precision):
            out = self.model(feats, feat_lens, batch.tokens.to(self.device), batch.token_lens.to(self.device))
        parts = {"loss": float(out.total.detach())}
        if out.ctc is not None:
            parts["ctc"] = float(out.ctc.detach())
        if out.attention is not None:
            parts["attention"] = float(out.attention.detach())
        return out.total, parts

    def run(self) -> TrainResult:
        tcfg = self.cfg.training
        start = time.perf_counter()
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            dump_config(self.cfg, self.out_dir / "config.yaml")
        bar = tqdm(total=tcfg.max_steps, initial=self.step, disable=not (self.progress and self.dist.is_main))
        window_audio, window_start = 0.0, time.perf_counter()
        self.model.train()
        accum = 0
        stop = self.step >= tcfg.max_steps
        for batch in self._batches() if not stop else ():
            self.batch_in_epoch += 1
            loss, parts = self._loss(batch)
            if not math.isfinite(parts["loss"]):
                log.warning("step %d: non-finite loss %s, batch skipped", self.step, parts["loss"])
                self.optimizer.zero_grad(set_to_none=True)
                accum = 0
                continue
            self.scaler.scale(loss / tcfg.accum_steps).backward()
            window_audio += float(batch.wave_lens.sum()) / self.cfg.audio.sample_rate
            accum += 1
            if accum < tcfg.accum_steps:
                continue
            accum = 0
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.bundle.model.parameters(), tcfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.step += 1
            bar.update(1)
            if self.step % tcfg.log_every == 0 or self.step == tcfg.max_steps:
                elapsed = time.perf_counter() - window_start
                rate = window_audio * self.dist.world_size / max(elapsed, 1e-9)
                record = {
                    "step": self.step,
                    "epoch": self.epoch,
                    **{k: round(v, 4) for k, v in parts.items()},
                    "lr": self.scheduler.get_last_lr()[0],
                    "grad_norm": round(float(grad_norm), 3),
                    "audio_s_per_s": round(rate, 1),
                }
                self._log(record)
                bar.set_postfix(loss=f"{parts['loss']:.3f}", lr=f"{record['lr']:.2e}", audio_s_s=f"{rate:.0f}")
                window_audio, window_start = 0.0, time.perf_counter()
            last_step = self.step >= tcfg.max_steps
            if self.step % tcfg.eval_every == 0 or self.step % tcfg.save_every == 0 or last_step:
                stop = self._checkpoint(evaluate_dev=self.step % tcfg.eval_every == 0 or last_step)
                self.model.train()
            if last_step or stop:
                break
        bar.close()
        model_path = self._finish() if self.dist.is_main else self.out_dir / "model.pt"
        if self.dist.world_size > 1:
            dist.barrier()
        best = min((e["dev_wer"] for e in self.evals), default=None)
        return TrainResult(model_path, self.step, best, time.perf_counter() - start)

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        log.debug("%s", record)
        if self._tensorboard is not None:
            for key, value in record.items():
                if key not in ("time", "step", "epoch") and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(key, value, self.step)

    @cached_property
    def _tensorboard(self) -> Any:
        """A SummaryWriter into the run folder when tensorboard is installed (optional), else None."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    def _evaluate(self) -> tuple[float, float] | None:
        if not self.dev_entries:
            return None
        self.bundle.model.eval()
        recognizer = Recognizer(self.bundle, device=str(self.device))
        report = evaluate(recognizer, self.dev_entries)
        self.bundle.model.train()
        return report.wer, report.cer

    def _checkpoint(self, *, evaluate_dev: bool) -> bool:
        """Save (rank 0), evaluate on dev, prune old checkpoints; returns True when early stopping fires."""
        stop = False
        if self.dist.is_main:
            self.bundle.step = self.step
            ckpt_dir = self.out_dir / "checkpoints"
            scores = self._evaluate() if evaluate_dev else None
            if scores is not None:
                wer, cer = scores
                self.bundle.metrics = {"dev_wer": wer, "dev_cer": cer}
                path = ckpt_dir / f"step_{self.step}.pt"
                previous_best = min((e["dev_wer"] for e in self.evals), default=math.inf)
                self.evals.append({"step": self.step, "dev_wer": wer, "dev_cer": cer, "path": str(path)})
                self.stale_evals = 0 if wer < previous_best else self.stale_evals + 1
                self._log({"step": self.step, "dev_wer": round(wer, 4), "dev_cer": round(cer, 4)})
                save_checkpoint(path, self.bundle)
                self._prune(ckpt_dir)
                patience = self.cfg.training.early_stop_patience
                stop = patience > 0 and self.stale_evals >= patience
                if stop:
                    log.info("early stopping at step %d: no dev improvement in %d evaluations", self.step, patience)
            save_checkpoint(self.out_dir / "last.pt", self.bundle, extra=self._training_state())
        if self.dist.world_size > 1:
            flag = torch.tensor([int(stop)])
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        return stop

    def _ranked(self) -> list[dict[str, Any]]:
        return sorted(self.evals, key=lambda e: (e["dev_wer"], e["dev_cer"], -e["step"]))

    def _prune(self, ckpt_dir: Path) -> None:
        keep = {e["path"] for e in self._ranked()[: self.cfg.training.keep_checkpoints]}
        for path in ckpt_dir.glob("step_*.pt"):
            if str(path) not in keep:
                path.unlink(missing_ok=True)

    def _finish(self) -> Path:
        """Write model.pt: best dev checkpoint, or the average of the best N when that scores better."""
        from asr.checkpoint import average_checkpoints

        final = self.out_dir / "model.pt"
        ranked = [e for e in self._ranked() if Path(e["path"]).is_file()]
        if not ranked:
            self.bundle.step = self.step
            save_checkpoint(final, self.bundle)
            return final
        best = ranked[0]
        candidates = [Path(e["path"]) for e in ranked[: self.cfg.training.average_best]]
        self.bundle.model.load_state_dict(read_payload(best["path"])["model"])
        chosen = {"dev_wer": best["dev_wer"], "dev_cer": best["dev_cer"], "source": f"step {best['step']}"}
        if len(candidates) > 1:
            single_state = {k: v.clone() for k, v in self.bundle.model.state_dict().items()}
            self.bundle.model.load_state_dict(average_checkpoints(candidates))
            scores = self._evaluate()
            if scores is not None and scores[0] <= best["dev_wer"]:
                chosen = {"dev_wer": scores[0], "dev_cer": scores[1], "source": f"average of {len(candidates)}"}
            else:
                self.bundle.model.load_state_dict(single_state)
        self.bundle.step = self.step
        self.bundle.metrics = chosen
        self._log({"step": self.step, "final": chosen})
        save_checkpoint(final, self.bundle)
        return final


def train(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    init: ModelBundle | None = None,
    progress: bool = True,
    trainable: Callable[[str], bool] | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``out_dir``; continues from ``out_dir/last.pt`` when present and ``resume``."""
    trainer = Trainer(cfg, Path(out_dir), init=init, progress=progress, trainable=trainable)
    last = Path(out_dir) / "last.pt"
    if resume and last.is_file():
        trainer.resume(last)
    return trainer.run()
