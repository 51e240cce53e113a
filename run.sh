#!/usr/bin/env bash
# Fresh-machine entry point: set up .venv (idempotent), then run the main job on the shipped model.
#   ./run.sh              set up + transcribe the bundled samples with models/default.pt
#   ./run.sh --setup-only set up only (what CI does before running the tests)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# Plain pip on purpose: torch==2.13.0 is pinned exactly and resolves to the local CPU wheel.
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e '.[dev]'

if [ "${1:-}" = "--setup-only" ]; then
    exit 0
fi

echo "== transcribing samples/ with the shipped model (models/default.pt) =="
.venv/bin/asr transcribe samples/
echo "== one file as JSON: 3 alternatives from CTC prefix beam search, word times and confidences =="
.venv/bin/asr transcribe samples/speech_commands/yes/f264e0df_nohash_0.wav --format json --method ctc_prefix_beam --nbest 3
echo "== accuracy on the bundled samples =="
.venv/bin/asr eval --manifest samples/manifest.jsonl
