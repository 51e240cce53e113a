// Live captions: microphone → AudioWorklet (16 kHz PCM) → WebSocket /v1/stream → partials and finals.
// File tab: POST /v1/recognize with the dropped file. The protocol is documented in the README.
// No framework, no build step: everything this page loads comes from the server it talks to.

const $ = (id) => document.getElementById(id);
const TARGET_RATE = 16000;
const CHUNK_MS = 100;

const params = new URLSearchParams(location.search);
$("token").value = params.get("token") || sessionStorage.getItem("asr-token") || "";
$("token").addEventListener("change", () => sessionStorage.setItem("asr-token", $("token").value));
const token = () => $("token").value.trim();

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
  if (text && /UNAUTHENTICATED/.test(text)) $("auth").open = true;
}

function setState(text) {
  $("state").textContent = text;
}

function seconds(s) {
  return s.toFixed(2);
}

async function loadInfo() {
  const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
  const response = await fetch("v1/info", { headers });
  const body = await response.json();
  if (!response.ok) return showError(`${body.code}: ${body.message}`);
  $("model").textContent = body.model;
}

// --- microphone tab ------------------------------------------------------------------------------

class CaptionSession {
  constructor() {
    this.sent = []; // [samples sent so far, time sent] per frame: when the audio a result needed left
    this.samples = 0;
    this.rightContextS = 0;
    this.stopping = false;
  }

  async start() {
    showError("");
    setState("asking for the microphone");
    // Everything that takes time comes before the microphone opens, and its frames are queued until the
    // socket is open: a word spoken while connecting is not lost.
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule("static/capture.js");
    this.node = new AudioWorkletNode(this.context, "pcm16-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 0, // a sink: Chromium pulls it without a connection to the speakers
      processorOptions: { targetRate: TARGET_RATE, chunkMs: CHUNK_MS },
    });
    this.queued = [];
    this.node.port.onmessage = (event) => this.sendAudio(event.data);
    const url = new URL("v1/stream", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    this.socket = new WebSocket(url);
    this.socket.binaryType = "arraybuffer";
    this.socket.onopen = () => this.onOpen();
    this.socket.onmessage = (event) => this.onMessage(JSON.parse(event.data));
    this.socket.onclose = (event) => this.onClose(event);
    this.media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    this.context.createMediaStreamSource(this.media).connect(this.node);
    if (this.socket.readyState === WebSocket.CONNECTING) setState("connecting");
  }

  onOpen() {
    const start = { type: "start", sample_rate_hz: TARGET_RATE, interim_results: true };
    start.endpointing = $("endpointing").checked;
    if (token()) start.token = token();
    this.socket.send(JSON.stringify(start));
    for (const buffer of this.queued.splice(0)) this.sendAudio(buffer);
  }

  sendAudio(buffer) {
    if (this.stopping) return;
    if (this.socket.readyState === WebSocket.CONNECTING) return this.queued.push(buffer);
    if (this.socket.readyState !== WebSocket.OPEN) return;
    this.socket.send(buffer);
    this.samples += buffer.byteLength / 2;
    this.sent.push([this.samples, performance.now()]);
    if (this.sent.length > 3000) this.sent.splice(0, 1000); // keep the last few minutes
  }

  // Time since the frame holding the audio a result needed (its end + the server's look-ahead) was sent.
  latencyMs(endS) {
    const needed = Math.min((endS + this.rightContextS) * TARGET_RATE, this.samples);
    const frame = this.sent.find(([samples]) => samples >= needed);
    return frame ? performance.now() - frame[1] : NaN;
  }

  onMessage(message) {
    if (message.type === "ready") {
      $("model").textContent = message.model;
      this.rightContextS = message.right_context_ms / 1000;
      setState("listening");
      $("stop").disabled = false;
    } else if (message.type === "result") {
      this.showResult(message);
    } else if (message.type === "error") {
      showError(`${message.code}: ${message.message}`);
    }
  }

  showResult(result) {
    const latency = this.latencyMs(result.end_s);
    if (!Number.isNaN(latency)) {
      $("latency").textContent = `${Math.round(latency)} ms (server ${Math.round(result.latency_ms)} ms)`;
    }
    if (!result.is_final) {
      $("partial").textContent = result.text;
      return;
    }
    $("partial").textContent = "";
    if (!result.text) return; // an utterance of silence
    const item = document.createElement("li");
    const time = document.createElement("time");
    time.textContent = `${seconds(result.start_s)}–${seconds(result.end_s)}`;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = result.text;
    item.append(time, text);
    $("finals").append(item);
    item.scrollIntoView({ block: "nearest" });
  }

  stop() {
    if (this.stopping) return;
    this.stopping = true;
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify({ type: "stop" }));
    else this.socket.close(); // still connecting: nothing was sent yet
    setState("finishing");
    this.release();
  }

  release() {
    if (this.media) this.media.getTracks().forEach((track) => track.stop());
    this.node.disconnect();
    this.context.close();
  }

  onClose(event) {
    if (!this.stopping) this.release();
    this.stopping = true;
    if (event.code >= 4000) setState(`stopped (${event.reason || event.code})`);
    else if (event.code === 1000) setState("idle");
    else {
      setState("disconnected");
      if (!$("error").textContent) showError(`connection closed (${event.code}${event.reason ? ": " + event.reason : ""})`);
    }
    $("start").disabled = false;
    $("stop").disabled = true;
    session = null;
  }
}

let session = null;

$("start").addEventListener("click", async () => {
  $("start").disabled = true;
  session = new CaptionSession();
  try {
    await session.start();
  } catch (error) {
    showError(`microphone: ${error.message}`);
    if (session) session.stop();
  }
});

$("stop").addEventListener("click", () => session && session.stop());

// --- file tab -----------------------------------------------------------------------------------

function selectTab(name) {
  for (const tab of ["mic", "file"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`panel-${tab}`).hidden = tab !== name;
  }
}
$("tab-mic").addEventListener("click", () => selectTab("mic"));
$("tab-file").addEventListener("click", () => selectTab("file"));

async function transcribeFile(file) {
  showError("");
  $("file-result").textContent = `transcribing ${file.name} …`;
  const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
  const started = performance.now();
  const response = await fetch("v1/recognize", { method: "POST", body: file, headers });
  const body = await response.json();
  if (!response.ok) {
    $("file-result").textContent = "";
    return showError(`${body.code}: ${body.message}`);
  }
  const total = Math.round(performance.now() - started);
  const heading = document.createElement("p");
  heading.className = "text";
  heading.textContent = body.text || "(no words)";
  const facts = document.createElement("p");
  facts.className = "facts";
  facts.textContent = `${file.name}: ${seconds(body.duration_s)} s of audio, ${total} ms round trip (server ${Math.round(body.processing_ms)} ms)`;
  const words = document.createElement("ol");
  words.className = "words";
  for (const w of body.words) {
    const item = document.createElement("li");
    item.textContent = `${seconds(w.start_s)}–${seconds(w.end_s)} ${w.word} (${Math.round(w.confidence * 100)} %)`;
    words.append(item);
  }
  $("file-result").replaceChildren(heading, facts, words);
}

$("file").addEventListener("change", () => $("file").files[0] && transcribeFile($("file").files[0]));
$("drop").addEventListener("dragover", (event) => {
  event.preventDefault();
  $("drop").classList.add("over");
});
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (event) => {
  event.preventDefault();
  $("drop").classList.remove("over");
  if (event.dataTransfer.files[0]) transcribeFile(event.dataTransfer.files[0]);
});

loadInfo().catch((error) => showError(`cannot reach the server: ${error.message}`));
