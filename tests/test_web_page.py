"""The live-captions page in a real browser: Debian's headless Chromium, driven by selenium, hears a
bundled recording through Chromium's fake microphone and must caption it as the gRPC path does.

The recording is the first bundled word that the served model (``models/english.pt``) gets right
through the gRPC streaming path, checked in the same test, so the test keeps its meaning when the
shipped model changes. The page's audio goes through the browser's own capture, the AudioWorklet's
downsampling and the WebSocket, so equal captions mean every stage of that path works. Endpointing
is off on both paths (the page's "new line on each pause" box): the shipped single-word model
splits words at pauses when streaming with endpointing, which would test the model, not the page.
Set ``ASR_WEB_SCREENSHOT=docs/web_page.png`` to save the README's screenshot of the captioned page.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from asr.audio import load_audio
from asr.inference import Recognizer
from client import AsrClient, StreamOptions
from client.audio import chunk_pcm16, read_pcm16
from server.app import ServerThread
from server.config import ServerConfig

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "english.pt"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
RATE = 16000
TRAILING_SILENCE_S = 1.5  # after the word: the microphone goes quiet before Stop, as a speaker's does

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)",
)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    cfg = ServerConfig(host="127.0.0.1", port=0, metrics_port=0, web_port=0, model=str(MODEL), log_level="WARNING")
    with ServerThread(cfg, Recognizer.from_checkpoint(MODEL, device="cpu")) as running:
        yield running


def metric(server: ServerThread, name: str, **labels: str) -> float:
    assert server.running is not None
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.running.metrics_port}/metrics", timeout=5).read().decode()
    found = (s for family in text_string_to_metric_families(text) for s in family.samples)
    return sum(s.value for s in found if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_for(condition: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def microphone_file(path: Path, out: Path) -> Path:
    """The recording at 16 kHz followed by silence: what Chromium's fake microphone plays, once."""
    wave = load_audio(path, RATE)
    sf.write(out, np.concatenate([wave, np.zeros(int(TRAILING_SILENCE_S * RATE), np.float32)]), RATE, "PCM_16")
    return out


def grpc_captions(server: ServerThread, wav: Path) -> list[str]:
    """Finals of the gRPC streaming path for the same file, with the same options the page's test uses."""
    pcm, rate = read_pcm16(wav)
    with AsrClient(server.address, timeout_s=30) as client:
        updates = client.stream(chunk_pcm16(pcm, rate, 100), StreamOptions(sample_rate_hz=rate, endpointing=False))
        return [u.text for u in updates if u.is_final and u.text]


@pytest.fixture(scope="module")
def spoken(server, samples, tmp_path_factory) -> tuple[Path, Path, str]:
    """(recording, microphone file, gRPC captions) for the first bundled word the model gets right."""
    out = tmp_path_factory.mktemp("microphone")
    for path, text in zip(samples.paths, samples.texts):
        if " " in text:
            continue  # single words: what the shipped model was trained on
        wav = microphone_file(path, out / f"{path.stem}.wav")
        if grpc_captions(server, wav) == [text]:
            return path, wav, text
    pytest.fail(f"{MODEL.name} recognises none of the bundled words through gRPC; the page cannot be compared")


def chromium(microphone: Path, profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=900,640",
        # A microphone that plays the file once (then silence), allowed without a prompt.
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}%noloop",
    ]  # fmt: skip
    for flag in flags:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


# Records every change of the partial line and of the finals list, with the page's clock.
OBSERVE = """
window.captionLog = [];
const log = (kind, text) => window.captionLog.push([kind, text, performance.now()]);
new MutationObserver(() => log("partial", document.getElementById("partial").textContent))
  .observe(document.getElementById("partial"), {childList: true, characterData: true, subtree: true});
const finals = () => [...document.querySelectorAll("#finals .text")].map(e => e.textContent).join(" ");
new MutationObserver(() => log("final", finals()))
  .observe(document.getElementById("finals"), {childList: true, subtree: true});
"""


def test_the_page_captions_the_microphone_like_grpc_and_frees_the_session_when_the_tab_closes(
    server, spoken, tmp_path
):
    path, microphone, text = spoken
    driver = chromium(microphone, tmp_path / "profile")
    try:
        driver.get(server.web_url + "/")
        assert wait_for(lambda: driver.find_element(By.ID, "model").text == MODEL.stem)
        driver.execute_script(OBSERVE)
        driver.find_element(By.ID, "endpointing").click()  # one caption until Stop, as the gRPC reference
        driver.find_element(By.ID, "start").click()
        assert wait_for(lambda: driver.find_element(By.ID, "state").text == "listening")
        assert wait_for(lambda: driver.find_element(By.ID, "partial").text)  # a partial while the word plays
        time.sleep(load_audio(microphone, RATE).size / RATE)  # the rest of the word and the silence
        driver.find_element(By.ID, "stop").click()
        finals = wait_for(lambda: [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#finals .text")])
        log = driver.execute_script("return window.captionLog")
        latency = driver.find_element(By.ID, "latency").text
        print(f"\npage captions {finals} vs gRPC {[text]} for {path.name}; page latency {latency}")
        print("page updates:", json.dumps([[kind, words, round(t)] for kind, words, t in log]))
        assert finals == [text]
        first_final = next(t for kind, words, t in log if kind == "final")
        partials = [words for kind, words, t in log if kind == "partial" and words and t < first_final]
        assert partials and text.startswith(partials[0][:1])  # partials came first, and grew into the word
        assert "ms" in latency
        assert wait_for(lambda: driver.find_element(By.ID, "state").text == "idle")  # the server closed with 1000
        if os.environ.get("ASR_WEB_SCREENSHOT"):
            driver.save_screenshot(os.environ["ASR_WEB_SCREENSHOT"])

        # A second tab streams; closing it (no Stop) must free its stream slot on the server.
        first_tab = driver.current_window_handle
        cancelled = metric(server, "asr_requests_total", method="WebStream", code="CANCELLED")
        driver.switch_to.new_window("tab")
        driver.get(server.web_url + "/")
        driver.find_element(By.ID, "start").click()
        assert wait_for(lambda: metric(server, "asr_active_streams") == 1)
        driver.close()
        driver.switch_to.window(first_tab)
        assert wait_for(lambda: metric(server, "asr_active_streams") == 0)
        labels = {"method": "WebStream", "code": "CANCELLED"}
        assert wait_for(lambda: metric(server, "asr_requests_total", **labels) == cancelled + 1)

        # The file tab sends the recording to the unary path: the page shows Recognize's transcript.
        with AsrClient(server.address, timeout_s=30) as client:
            expected = client.transcribe(path).text
        driver.find_element(By.ID, "tab-file").click()
        driver.find_element(By.ID, "file").send_keys(str(path))
        shown = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#file-result .text"))
        assert shown and shown[0].text == expected
        assert not driver.find_element(By.ID, "error").is_displayed()
    finally:
        driver.quit()
