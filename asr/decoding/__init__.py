"""Search over CTC log-posteriors and attention-decoder scores.

Everything here works on tensors and on the :class:`~asr.decoding.scorers.Scorer` protocol; it never
imports the model, tokenizer or features, so each search can be tested against brute-force oracles.
Entry point: :func:`asr.decoding.search.search`; streaming uses
:class:`asr.decoding.ctc_prefix_beam.CTCPrefixBeamSearch` directly.
"""
