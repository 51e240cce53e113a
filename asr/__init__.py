"""A speech recognizer you can train, serve and stream to.

Entry points: ``asr.inference.Recognizer`` (offline transcription), ``asr.streaming`` (live
sessions), ``asr.training.trainer.train`` (training), the ``asr`` CLI (``asr.cli``), the
``asr-server`` gRPC service (``server``) and the ``asr-client`` library/CLI (``client``).

Dimension letters used in docstrings and shape comments:
B batch, N waveform samples, T feature frames, T' subsampled (encoder) frames, F mel bins,
H hidden size, V vocabulary size, U tokens, K beam size.
"""

__version__ = "0.1.0"
