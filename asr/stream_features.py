"""Front-end features for streaming: audio arrives in pieces, the encoder wants whole chunks of frames.

Each :class:`~asr.streaming.StreamingSession` owns one feature stream, chosen by its front end:

- :class:`LogMelStream` (log-mel): a frame depends only on its own 25 ms window, so frames are
  computed once, as soon as their window is complete, exactly as offline.
- :class:`WindowStream` (Whisper encoder): every output frame of a transformer depends on the
  whole input, so there is no incremental form. Each step re-encodes a window: the current
  utterance's audio from its start (at most ``left_context_ms`` before the chunk), the chunk and
  the look-ahead. The chunk's frames are final; the look-ahead frames (which feed the LC-BLSTM's
  backward direction) are provisional and are recomputed, with more right context, as part of
  the next chunk. Anchoring the window at the utterance start matters: Whisper's frames depend
  strongly on their position in the window (the same word 2 s further into a window has a
  cosine of ~0.7 to itself), and offline every utterance starts at position 0. The encoder costs
  about ``(history + chunk + look-ahead) / chunk`` times its offline cost per second of audio.

Both keep ``pending`` normalised features ``(T, F)`` (CMVN applied) and ``loudness (T,)`` of each
frame, which endpointing compares with the stream's range. :func:`compute`
advances many streams of one recognizer with one front-end pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from asr.features.frontend import LogMelFrontend
from asr.features.whisper_encoder import MAX_FRAMES
from asr.features.whisper_frontend import WhisperFrontend
from asr.inference import Recognizer, pad_waveforms


class LogMelStream:
    """Incremental log-mel frames: frame ``t`` uses samples ``[t·hop, t·hop + win)`` and is computed once."""

    def __init__(self, recognizer: Recognizer, frontend: LogMelFrontend) -> None:
        self.recognizer = recognizer
        self.hop, self._win = frontend.hop_length, frontend.win_length
        self.reset()

    def reset(self) -> None:
        self.samples = np.zeros(0, dtype=np.float32)  # unread samples from sample_pos on
        self.sample_pos = 0
        self.total_samples = 0
        self.frames_consumed = 0
        self.pending = torch.zeros(0, self.recognizer.frontend.output_dim, device=self.recognizer.device)
        self.loudness = torch.zeros(0, device=self.recognizer.device)

    def start_utterance(self) -> None:
        """A log-mel frame does not depend on where its utterance starts: nothing to do."""

    def push(self, samples: np.ndarray) -> None:
        self.samples = np.concatenate([self.samples[self.sample_pos :], samples])
        self.sample_pos = 0
        self.total_samples += len(samples)

    def frames_ready(self) -> int:
        """Pending frames plus whole frames the unread samples hold (a frame needs its full window)."""
        available = len(self.samples) - self.sample_pos
        return len(self.pending) + (0 if available < self._win else (available - self._win) // self.hop + 1)

    def consume(self, frames: int) -> None:
        self.pending, self.loudness = self.pending[frames:], self.loudness[frames:]
        self.frames_consumed += frames

    def _todo(self, wanted: int, final: bool) -> tuple[np.ndarray, int] | None:
        """Samples to run and the frame count they give; ``final`` turns a too-short stream into one padded frame."""
        if final and self.total_samples and self.frames_consumed == 0 and self.frames_ready() == 0:
            return self.samples[self.sample_pos :], 1
        count = min(self.frames_ready(), wanted) - len(self.pending)
        if count <= 0:
            return None
        end = self.sample_pos + (count - 1) * self.hop + self._win
        return self.samples[self.sample_pos : end], count

    def _take(self, feats: Tensor, count: int) -> None:
        self.pending = torch.cat([self.pending, feats[:count]])
        self.loudness = torch.cat([self.loudness, feats[:count].mean(dim=-1)])
        self.sample_pos = min(len(self.samples), self.sample_pos + count * self.hop)


class WindowStream:
    """Sliding-window re-encoding for a front end without an incremental form (Whisper); see the module docstring."""

    def __init__(self, recognizer: Recognizer, frontend: WhisperFrontend, left_context_ms: int) -> None:
        self.recognizer = recognizer
        self.hop = round(frontend.frame_shift_s * recognizer.sample_rate)  # samples per output frame
        self.left_frames = math.ceil(left_context_ms / 1000 / frontend.frame_shift_s)
        self.reset()

    def start_utterance(self) -> None:
        """Windows start no earlier than here (the session calls this at every endpoint)."""
        self.utterance_start = self.frames_consumed

    def _window_start(self, wanted: int) -> int:
        """First frame of the next window: the utterance start, or ``left_context_ms`` back; 30 s in all at most."""
        left = min(self.left_frames, max(0, MAX_FRAMES - wanted))
        return max(self.utterance_start, self.frames_consumed - left)

    def reset(self) -> None:
        self.samples = np.zeros(0, dtype=np.float32)  # the stream's samples from buffer_start on
        self.buffer_start = 0
        self.total_samples = 0
        self.frames_consumed = 0
        self.utterance_start = 0
        self._left = 0  # frames of history in the window being computed (set by _todo, read by _take)
        self.pending = torch.zeros(0, self.recognizer.frontend.output_dim, device=self.recognizer.device)
        self.loudness = torch.zeros(0, device=self.recognizer.device)

    def push(self, samples: np.ndarray) -> None:
        keep_from = max(self.utterance_start, self.frames_consumed - self.left_frames) * self.hop - self.buffer_start
        self.samples = np.concatenate([self.samples[keep_from:], samples])
        self.buffer_start += keep_from
        self.total_samples += len(samples)

    def frames_ready(self) -> int:
        """Whole 20 ms frames of audio beyond those consumed."""
        return self.total_samples // self.hop - self.frames_consumed

    def consume(self, frames: int) -> None:
        self.pending, self.loudness = self.pending[frames:], self.loudness[frames:]
        self.frames_consumed += frames

    def _todo(self, wanted: int, final: bool) -> tuple[np.ndarray, int] | None:
        """The window to encode (left context + ``wanted`` frames) and how many frames of it are new.

        At the end of the stream a partial last frame counts, as offline (``ceil((N // 160) / 2)``).
        """
        available = self.frames_ready()
        if final:
            offline = int(self.recognizer.frontend.num_frames(torch.tensor([self.total_samples]))[0])
            available = offline - self.frames_consumed
        count = min(available, wanted)
        if count <= 0:
            return None
        self._left = self.frames_consumed - self._window_start(wanted)
        start = (self.frames_consumed - self._left) * self.hop - self.buffer_start
        end = (self.frames_consumed + count) * self.hop - self.buffer_start
        return self.samples[start:end], count

    def _take(self, feats: Tensor, count: int, loudness: Tensor) -> None:
        self.pending = feats[self._left : self._left + count]
        self.loudness = loudness[self._left : self._left + count]


FeatureStream = LogMelStream | WindowStream


def open_feature_stream(recognizer: Recognizer, left_context_ms: int) -> FeatureStream:
    frontend = recognizer.frontend
    if isinstance(frontend, WhisperFrontend):
        return WindowStream(recognizer, frontend, left_context_ms)
    return LogMelStream(recognizer, frontend)


def compute(streams: Sequence[FeatureStream], wanted: int, *, final: bool = False) -> None:
    """Bring every stream's ``pending`` to ``wanted`` frames (or all its audio allows), one front-end pass.

    ``final``: the stream has ended; a log-mel stream shorter than one window yields one padded
    frame and a window stream counts its partial last frame, as the offline front end does.
    """
    todo = [(s, job) for s in streams if (job := s._todo(wanted, final)) is not None]
    if not todo:
        return
    recognizer = todo[0][0].recognizer
    waves, wave_lens = pad_waveforms([samples for _, (samples, _) in todo])
    waves, wave_lens = waves.to(recognizer.device), wave_lens.to(recognizer.device)
    feats, feat_lens = recognizer.frontend(waves, wave_lens)
    feats = recognizer.cmvn(feats, feat_lens)  # (B, T, F)
    for b, (stream, (_, count)) in enumerate(todo):
        if isinstance(stream, WindowStream):
            stream._take(feats[b], count, _window_loudness(waves[b : b + 1], stream.hop, feats.size(1))[0])
        else:
            stream._take(feats[b], count)


def _window_loudness(waves: Tensor, hop: int, frames: int) -> Tensor:
    """``log10`` mean power of each output frame's ``hop`` samples, ``(B, frames)``.

    Not Whisper's log-mel: that is clamped 8 decades below each window's loudest bin, so the
    same silence reads louder in a quiet window than in a loud one, and endpointing compares
    frames across windows.
    """
    waves = nn.functional.pad(waves, (0, max(0, frames * hop - waves.size(1))))[:, : frames * hop]
    return waves.view(waves.size(0), frames, hop).square().mean(dim=-1).add(1e-10).log10()
