"""Synthetic speech: channel simulation on known signals, prompts, and a resumable corpus run.

Engine tests use espeak-ng and flite when installed (``apt-get install espeak-ng flite``) and are
skipped with that reason otherwise; the corpus logic is also tested with a fake engine, so it is
covered on any machine.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from asr.data import channel, synthetic_corpus
from asr.data.manifest import read_manifest
from asr.data.synth import EngineUnavailable, build_engine
from asr.data.synthetic_corpus import SynthOptions, plan_jobs, resolve_voices, synthesize_corpus
from asr.data.texts import COMMAND_WORDS, Prompt, command_prompts, read_sentences
from asr.errors import ConfigError

SR = 16000
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get)")
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed (apt-get install flite)")


def _band_energy(wave: np.ndarray, lo_hz: float, hi_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(wave.shape[0], 1 / SR)
    return float(spectrum[(freqs >= lo_hz) & (freqs < hi_hz)].sum())


def test_telephone_band_removes_energy_above_3400_hz() -> None:
    wave = (0.1 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    phone = channel.telephone(wave, SR)
    assert phone.shape == wave.shape
    assert _band_energy(phone, 3600, SR / 2) < 0.01 * _band_energy(phone, 0, SR / 2)
    assert _band_energy(phone, 0, 200) < 0.01 * _band_energy(phone, 0, SR / 2)
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(SR) / SR)).astype(np.float32)
    assert np.std(channel.telephone(tone, SR)) > 0.8 * np.std(tone)  # the voice band passes


def test_mu_law_round_trip_has_255_levels_and_small_error() -> None:
    x = np.linspace(-1, 1, 20001, dtype=np.float32)
    y = channel.mu_law_round_trip(x)
    assert len(np.unique(y)) == 255
    assert np.max(np.abs(y - x)) < 0.04  # coarsest step near full scale is about 0.06


def test_reverb_lengthens_decay_after_a_burst() -> None:
    rng = np.random.default_rng(0)
    wave = np.zeros(SR, np.float32)
    wave[:1600] = rng.standard_normal(1600)  # 0.1 s burst, then silence
    wet = channel.reverberate(wave, channel.synthetic_rir(SR, 0.5, rng))
    tail = slice(int(0.2 * SR), int(0.4 * SR))
    assert float(np.sum(wave[tail] ** 2)) == 0.0
    assert float(np.sum(wet[tail] ** 2)) > 1e-3 * float(np.sum(wet[:1600] ** 2))
    assert wet.shape == wave.shape


def test_synthetic_rir_decays_60_db_in_rt60() -> None:
    rir = channel.synthetic_rir(SR, 0.4, np.random.default_rng(1))
    energy = np.convolve(rir[1:] ** 2, np.ones(400), mode="same")  # smoothed envelope of the tail
    early, late = energy[int(0.05 * SR)], energy[int(0.35 * SR)]
    assert 10 * np.log10(early / late) == pytest.approx(60 * 0.3 / 0.4, abs=6)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_noise_hits_the_requested_snr(snr_db: float, exponent: float) -> None:
    rng = np.random.default_rng(2)
    wave = (0.3 * np.sin(2 * np.pi * 220 * np.arange(SR) / SR)).astype(np.float32)
    noisy = channel.add_noise_at_snr(wave, channel.colored_noise(SR, exponent, rng), snr_db)
    measured = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean((noisy - wave).astype(np.float64) ** 2))
    assert measured == pytest.approx(snr_db, abs=0.5)


def test_sentences_are_normalised_and_deduplicated(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("Hello, World!\n\n  hello world \nIt cost $5.\n", encoding="utf-8")
    assert [p.text for p in read_sentences(path)] == ["hello world", "it cost five dollars"]
    with pytest.raises(ConfigError, match="does not exist"):
        read_sentences(tmp_path / "missing.txt")


def test_command_prompts_cover_every_command_word_and_are_seeded() -> None:
    prompts = command_prompts(0, digit_strings=20)
    words = {w for p in prompts for w in p.text.split()}
    assert set(COMMAND_WORDS) <= words
    assert len(COMMAND_WORDS) == 35
    assert prompts == command_prompts(0, digit_strings=20)
    assert prompts != command_prompts(1, digit_strings=20)


def test_voices_resolve_from_defaults_or_engine_prefixes() -> None:
    assert ("flite", "slt") in resolve_voices(["flite"])
    assert resolve_voices(["flite"], ["awb"]) == [("flite", "awb")]
    assert resolve_voices(["flite", "espeak-ng"], ["espeak-ng:en-us"]) == [("espeak-ng", "en-us")]
    with pytest.raises(ConfigError, match="ENGINE:VOICE"):
        resolve_voices(["flite", "espeak-ng"], ["slt"])
    with pytest.raises(ConfigError, match="unknown TTS engine"):
        resolve_voices(["festival"])


def test_variants_of_a_prompt_use_distinct_voices() -> None:
    voices = [("flite", v) for v in ("slt", "rms", "awb")]
    jobs = plan_jobs([Prompt("go", "t"), Prompt("stop", "t")], voices, SynthOptions(variants=3))
    assert len({j.file_name for j in jobs}) == 6
    for text in ("go", "stop"):
        assert len({j.voice for j in jobs if j.text == text}) == 3


def test_missing_engine_names_the_package_to_install(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("PIPER_BIN", raising=False)
    with pytest.raises(EngineUnavailable, match="apt-get install espeak-ng"):
        build_engine("espeak-ng")
    with pytest.raises(EngineUnavailable, match="pip install piper-tts"):
        build_engine("piper")


class _ToneEngine:
    """A stand-in engine: one tone per word, so corpus tests need no TTS program."""

    name = "tone"
    default_voices = ("a",)

    def __init__(self) -> None:
        self.calls = 0

    def render(self, text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        self.calls += 1
        t = np.arange(int(0.2 * len(text.split()) / rate * 22050)) / 22050
        return (0.5 * np.sin(2 * np.pi * 200 * pitch * t)).astype(np.float32), 22050


def test_corpus_manifest_is_valid_and_resumable(tmp_path, monkeypatch) -> None:
    engine = _ToneEngine()
    monkeypatch.setattr(synthetic_corpus, "build_engine", lambda name, **_: engine)
    prompts = [Prompt("yes", "t"), Prompt("seven three", "t")]
    voices, options = [("tone", "a"), ("tone", "b")], SynthOptions(variants=2, noise_prob=1.0, reverb_prob=1.0)
    first = synthesize_corpus(prompts, voices, tmp_path, options)
    assert (first.written, first.skipped, first.failed) == (4, 0, 0)
    entries = read_manifest(tmp_path / "manifest.jsonl", check_audio=True)
    assert sorted(e.text for e in entries) == ["seven three", "seven three", "yes", "yes"]
    assert {e.speaker for e in entries} == {"tone:a", "tone:b"}
    for entry in entries:
        info = sf.info(entry.audio)
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    manifest_before = (tmp_path / "manifest.jsonl").read_text()
    removed = tmp_path / entries[0].audio
    removed.unlink()
    calls = engine.calls
    second = synthesize_corpus(prompts, voices, tmp_path, options)
    assert (second.written, second.skipped) == (1, 3)
    assert engine.calls == calls + 1
    assert (tmp_path / "manifest.jsonl").read_text() == manifest_before


def test_job_audio_does_not_depend_on_order(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(synthetic_corpus, "build_engine", lambda name, **_: _ToneEngine())
    prompts = [Prompt("go", "t"), Prompt("stop now", "t")]
    synthesize_corpus(prompts, [("tone", "a")], tmp_path / "a", SynthOptions(noise_prob=1.0, clean_first=False))
    synthesize_corpus(prompts[::-1], [("tone", "a")], tmp_path / "b", SynthOptions(noise_prob=1.0, clean_first=False))
    for path in (tmp_path / "a").glob("*.wav"):
        assert np.array_equal(sf.read(path)[0], sf.read(tmp_path / "b" / path.name)[0])


@needs_espeak
def test_espeak_rate_and_pitch_flags_change_the_audio() -> None:
    engine = build_engine("espeak-ng")
    normal, rate_hz = engine.render("follow the dog", "en-us", 1.0, 1.0)
    fast, _ = engine.render("follow the dog", "en-us", 1.5, 1.0)
    assert rate_hz == 22050 and normal.dtype == np.float32
    assert 0.1 < np.max(np.abs(normal)) <= 1.0
    assert fast.shape[0] < 0.85 * normal.shape[0]


@needs_flite
def test_flite_pitch_is_applied_by_declaring_a_higher_rate() -> None:
    engine = build_engine("flite")
    wave, rate_hz = engine.render("house", "slt", 1.0, 1.0)
    _, higher = engine.render("house", "slt", 1.0, 1.1)
    assert rate_hz == 16000 and wave.shape[0] > 1600
    assert higher == 17600


@needs_espeak
def test_cli_synth_writes_a_manifest_of_espeak_speech(tmp_path, capsys) -> None:
    from asr.cli import main

    args = ["synth", "--words", "--limit", "2", "--engines", "espeak-ng", "--per-sentence", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    assert "wrote 4," in capsys.readouterr().out
    entries = read_manifest(tmp_path / "manifest.jsonl")
    assert len(entries) == 4 and all(e.speaker.startswith("espeak-ng:") for e in entries)
    assert main(args) == 0
    assert "wrote 0, kept 4" in capsys.readouterr().out
