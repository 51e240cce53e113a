#!/usr/bin/env bash
# Fresh-machine entry point: set up .venv (idempotent), then run the main job on the shipped model.
#   ./run.sh              set up + serve models/english.pt, stream one sample and batch-transcribe samples/
#                         through asr-client, then stop the server with SIGTERM (ASR_MODEL=path for another model)
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

MODEL=${ASR_MODEL:-models/english.pt}
PORT=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SERVER_LOG=$(mktemp -t asr-server.XXXXXX.log)
export ASR_SERVER="127.0.0.1:$PORT"  # asr-client reads the address from here

echo "== starting asr-server on $ASR_SERVER with $MODEL (log: $SERVER_LOG) =="
.venv/bin/asr-server --model "$MODEL" --host 127.0.0.1 --port "$PORT" --metrics-port -1 \
    --log-format text --log-level WARNING 2>"$SERVER_LOG" &
SERVER_PID=$!
stop_server() {  # on any failure: never leave the server running
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" && wait "$SERVER_PID" || true
    fi
}
trap stop_server EXIT

for attempt in $(seq 120); do  # bounded wait for the model to load: about 2 minutes
    if ! kill -0 "$SERVER_PID" 2>/dev/null || [ "$attempt" = 120 ]; then
        echo "asr-server exited or did not report SERVING within 2 minutes; its log:" >&2
        cat "$SERVER_LOG" >&2
        exit 1
    fi
    .venv/bin/asr-client health --wait-s 1 >/dev/null 2>&1 && break
done
.venv/bin/asr-client models

echo "== streaming a held-out LibriSpeech sentence in real time: partials as audio arrives, then finals with times =="
.venv/bin/asr-client stream samples/mini_librispeech/7367-86737-0105.opus --realtime

echo "== batch-transcribing samples/ (15 files, 8 requests in flight) =="
.venv/bin/asr-client transcribe samples/ --format txt --concurrency 8

echo "== stopping asr-server (SIGTERM: health NOT_SERVING, in-flight calls finish, then exit) =="
kill -TERM "$SERVER_PID"
if wait "$SERVER_PID"; then
    echo "asr-server stopped cleanly"
else
    code=$?
    echo "asr-server exited with status $code; its log:" >&2
    cat "$SERVER_LOG" >&2
    exit "$code"
fi
trap - EXIT
rm -f "$SERVER_LOG"
