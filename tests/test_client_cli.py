"""``asr-client`` against a real loopback server: outputs that parse, resume, per-file errors, exit codes.

The CLI runs in-process (``main(argv)``) for speed; one test runs it as ``python -m client`` in a
subprocess where importing torch or ``asr`` fails, which is how a client-only install behaves.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from client import AsrClient, StreamOptions, Transcript, Word
from client.audio import chunk_pcm16, read_pcm16
from client.cli import EXIT_INPUT_REFUSED, EXIT_NO_INPUT, EXIT_UNAVAILABLE, EXIT_USAGE, main
from client.formats import cues, to_srt, to_vtt
from client.types import Alternative
from server.app import ServerThread
from server.config import ServerConfig

ROOT = Path(__file__).resolve().parent.parent
SRT_TIME = r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d)"


@pytest.fixture(scope="module")
def recognizer(tiny_model_path: Path):
    from asr.inference import Recognizer

    return Recognizer.from_checkpoint(tiny_model_path, device="cpu")


@pytest.fixture(scope="module")
def server(tiny_model_path: Path, recognizer) -> Iterator[ServerThread]:
    cfg = ServerConfig(host="127.0.0.1", port=0, metrics_port=-1, model=str(tiny_model_path))
    with ServerThread(cfg, recognizer) as running:
        yield running


@pytest.fixture(scope="module")
def known_paths(samples) -> list[Path]:
    """The 8 shortest samples: the ones the tiny model memorised."""
    return [p for _, p in sorted(zip(samples.durations, samples.paths))][:8]


@pytest.fixture
def folder(tmp_path: Path, known_paths: list[Path]) -> Path:
    """Four known samples in two subfolders, as a user's recordings folder."""
    root = tmp_path / "audio"
    for i, path in enumerate(known_paths[:4]):
        (root / f"part{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / f"part{i % 2}" / path.name)
    return root


def run(server: ServerThread, *argv: str) -> int:
    return main(["--server", server.address, *argv])


def seconds(match: tuple[str, ...]) -> float:
    h, m, s, ms = (int(x) for x in match)
    return h * 3600 + m * 60 + s + ms / 1000


def cue_times(text: str) -> list[tuple[float, float]]:
    pattern = rf"^{SRT_TIME} --> {SRT_TIME}$"
    return [(seconds(m[:4]), seconds(m[4:])) for m in re.findall(pattern, text, flags=re.MULTILINE)]


def assert_monotonic(times: list[tuple[float, float]], duration_s: float) -> None:
    assert times
    previous_end = 0.0
    for start, end in times:
        assert previous_end <= start < end <= duration_s + 0.01
        previous_end = end


def test_srt_vtt_and_json_outputs_parse_with_monotonic_times(server, folder, tmp_path):
    audio = sorted(folder.rglob("*.wav"))
    with AsrClient(server.address) as client:
        expected = {p.relative_to(folder).with_suffix(""): client.transcribe(p) for p in audio}
    for fmt in ("srt", "vtt", "json", "txt"):
        assert run(server, "transcribe", str(folder), "--out", str(tmp_path / fmt), "--format", fmt) == 0
        for name, transcript in expected.items():
            text = (tmp_path / fmt / name).with_suffix(f".{fmt}").read_text(encoding="utf-8")
            if fmt == "json":
                record = json.loads(text)
                assert record["text"] == transcript.text and record["duration_s"] > 0
                starts = [w["start_s"] for w in record["words"]]
                assert starts == sorted(starts) and all(0 <= w["confidence"] <= 1 for w in record["words"])
            elif fmt == "txt":
                assert text == transcript.text + "\n"
            else:
                assert text.startswith("WEBVTT\n\n") == (fmt == "vtt")
                assert_monotonic(cue_times(text), transcript.duration_s)
                spoken = [line for line in text.splitlines() if line and "-->" not in line and line != "WEBVTT"]
                spoken = [line for line in spoken if not line.isdigit()]
                assert " ".join(spoken) == transcript.text


def test_resume_skips_outputs_already_written(server, folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(server, "transcribe", str(folder), "--out", str(out), "--format", "json") == 0
    outputs = sorted(out.rglob("*.json"))
    assert len(outputs) == 4 and not list(out.rglob(".*"))  # no temporary files left behind
    outputs[0].write_text("kept", encoding="utf-8")  # a finished output is never redone...
    outputs[1].unlink()  # ...a missing one is
    capsys.readouterr()
    assert run(server, "transcribe", str(folder), "--out", str(out), "--format", "json") == 0
    assert "1 transcribed, 3 skipped" in capsys.readouterr().err
    assert outputs[0].read_text(encoding="utf-8") == "kept" and outputs[1].exists()
    assert run(server, "transcribe", str(folder), "--out", str(out), "--format", "json", "--overwrite") == 0
    assert json.loads(outputs[0].read_text(encoding="utf-8"))["text"]


def test_a_corrupt_file_is_reported_while_the_others_succeed(server, folder, tmp_path, capsys):
    (folder / "part0" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" * 20)
    (folder / "part1" / "empty.flac").write_bytes(b"")
    out = tmp_path / "out"
    code = run(server, "transcribe", str(folder), "--out", str(out), "--format", "txt", "--concurrency", "2")
    err = capsys.readouterr().err
    assert code == EXIT_INPUT_REFUSED
    assert "corrupt.wav: INVALID_ARGUMENT" in err and "empty.flac: INVALID_ARGUMENT" in err
    assert "4 transcribed, 0 skipped (output exists), 2 failed" in err
    assert len(list(out.rglob("*.txt"))) == 4 and not (out / "part0" / "corrupt.txt").exists()

    # Without --out: JSON Lines on stdout, one per file, failures included as error records.
    assert run(server, "transcribe", str(folder)) == EXIT_INPUT_REFUSED
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 6
    failed = {Path(r["path"]).name: r["error"]["code"] for r in records if "error" in r}
    assert failed == {"corrupt.wav": "INVALID_ARGUMENT", "empty.flac": "INVALID_ARGUMENT"}
    assert all(r["text"] for r in records if "error" not in r)


def test_stream_prints_partials_then_finals_with_times(server, known_paths, capsys):
    path = known_paths[-1]
    pcm, rate = read_pcm16(path)
    with AsrClient(server.address) as client:
        finals = [u for u in client.stream(chunk_pcm16(pcm, rate), StreamOptions(sample_rate_hz=rate)) if u.is_final]
    assert run(server, "stream", str(path)) == 0
    lines = capsys.readouterr().out.splitlines()  # not a TTY: partials are plain lines
    assert lines[0].startswith("partial: ")
    final_lines = [line for line in lines if not line.startswith("partial: ")]
    assert final_lines == [f"[{u.start_s:7.2f} - {u.end_s:7.2f}] {u.text}" for u in finals]


def test_stream_reads_raw_pcm_from_stdin(server, known_paths, capsys, monkeypatch):
    pcm, rate = read_pcm16(known_paths[0])
    assert run(server, "stream", str(known_paths[0]), "--json") == 0
    from_file = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(pcm)))
    assert run(server, "stream", "-", "--rate", str(rate), "--json") == 0
    from_stdin = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["final"], r["text"]) for r in from_stdin] == [(r["final"], r["text"]) for r in from_file]
    assert from_stdin[-1]["final"] and from_stdin[-1]["text"]


def test_health_and_models_use_the_address_from_the_environment(server, monkeypatch, capsys):
    monkeypatch.setenv("ASR_SERVER", server.address)
    assert main(["health"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert main(["models", "--json"]) == 0
    (model,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert model["is_default"] and model["sample_rate_hz"] == 16000


def test_usage_errors_and_missing_inputs_have_their_exit_codes(server, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        run(server, "transcribe", "--concurrency", "many", str(tmp_path))
    assert info.value.code == EXIT_USAGE
    assert run(server, "transcribe", str(tmp_path), "--format", "srt") == EXIT_USAGE  # srt needs --out
    assert run(server, "stream") == EXIT_USAGE
    assert run(server, "transcribe", str(tmp_path / "nothing*.wav")) == EXIT_NO_INPUT


def test_a_server_going_away_gives_the_connection_error_exit_code(tiny_model_path, recognizer, known_paths, capsys):
    cfg = ServerConfig(host="127.0.0.1", port=0, metrics_port=-1, model=str(tiny_model_path))
    with ServerThread(cfg, recognizer) as doomed:
        address = doomed.address
        assert main(["--server", address, "health"]) == 0
    argv = ["--server", address, "--max-attempts", "2", "--timeout-s", "5"]
    assert main([*argv, "health"]) == EXIT_UNAVAILABLE
    assert main([*argv, "stream", str(known_paths[0])]) == EXIT_UNAVAILABLE
    assert main([*argv, "transcribe", *map(str, known_paths), "--concurrency", "1"]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err and "7 not attempted" in err  # the batch stops at the first connection error


def test_connections_spread_calls_over_separate_tcp_connections(server, recognizer, known_paths, caplog):
    caplog.set_level(logging.INFO, logger="server.interceptors")
    with AsrClient(server.address, connections=3) as client:
        texts = [t.text for t in client.transcribe_many(known_paths[:6], concurrency=2)]
    assert texts == [t.text for t in recognizer.transcribe_files(known_paths[:6])]
    peers = {r.peer for r in caplog.records if getattr(r, "method", "") == "Recognize"}
    assert len(peers) == 3  # one client port per connection: what lets `asr-server --workers` spread them
    with pytest.raises(ValueError, match="connections"):
        AsrClient(server.address, connections=0)


def test_cues_break_at_pauses_and_subtitles_format_hours():
    words = (Word("one", 0.1, 0.4, 0.9), Word("two", 0.5, 0.8, 0.9), Word("three", 3661.0, 3661.5, 0.9))
    transcript = Transcript((Alternative("one two three", 0.9, words),), 3662.0, 1.0, "id")
    assert [c.text for c in cues(transcript)] == ["one two", "three"]
    assert "01:01:01,000 --> 01:01:01,500\nthree" in to_srt(transcript)
    assert "01:01:01.000 --> 01:01:01.500\nthree" in to_vtt(transcript)
    no_words = Transcript((Alternative("hello", 0.9, ()),), 2.0, 1.0, "id")
    assert [(c.start_s, c.end_s, c.text) for c in cues(no_words)] == [(0.0, 2.0, "hello")]


BLOCK_TORCH = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "asr", "server"):
            raise ImportError(f"{name} is blocked: the client must not need it")
sys.meta_path.insert(0, Refuse())
import client, client.aio, client.cli, client.formats, client.batch, runpy
sys.argv = ["asr-client"] + sys.argv[1:]
runpy.run_module("client", run_name="__main__")
"""


def test_client_and_cli_work_without_torch_or_asr(server):
    result = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "--server", server.address, "health"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "SERVING"), result.stderr
