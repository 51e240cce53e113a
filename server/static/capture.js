// AudioWorklet processor: microphone audio at the AudioContext's rate → 16-bit PCM at the server's rate.
//
// Runs on the audio rendering thread. Downsampling first low-passes the input (a windowed-sinc FIR
// with its cut-off just below the target Nyquist frequency), so speech energy above 8 kHz does not
// fold back into the band the model hears, then reads the filtered signal at the target rate by
// linear interpolation (any ratio: 48 kHz, 44.1 kHz, ...). Chunks of `chunkMs` are posted to the
// page, which sends each as one binary WebSocket frame.

const TAPS = 63; // filter length at the input rate: ~0.4 kHz transition band at 48 kHz

function lowPass(cutoff, taps) {
  // cutoff as a fraction of the input sample rate; Blackman window; unity gain at 0 Hz.
  const h = new Float32Array(taps);
  const mid = (taps - 1) / 2;
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const x = i - mid;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const window = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
    h[i] = sinc * window;
    sum += h[i];
  }
  return h.map((v) => v / sum);
}

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate = 16000, chunkMs = 100 } = options.processorOptions || {};
    this.step = sampleRate / targetRate; // input samples per output sample (`sampleRate` is the context's)
    this.filter = this.step > 1 ? lowPass((0.45 * targetRate) / sampleRate, TAPS) : Float32Array.of(1);
    this.history = new Float32Array(this.filter.length - 1); // last inputs, for the filter's left edge
    this.previous = 0; // last filtered sample of the previous block (position -1 of the current one)
    this.position = 0; // where the next output sample lies, in input samples from this block's start
    this.chunkSamples = Math.round((targetRate * chunkMs) / 1000);
    this.chunk = new Int16Array(this.chunkSamples);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const n = channels[0].length;
    const mono = new Float32Array(n);
    for (const channel of channels) for (let i = 0; i < n; i++) mono[i] += channel[i] / channels.length;

    const taps = this.filter.length;
    const padded = new Float32Array(taps - 1 + n);
    padded.set(this.history);
    padded.set(mono, taps - 1);
    const filtered = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let acc = 0;
      for (let k = 0; k < taps; k++) acc += this.filter[k] * padded[i + taps - 1 - k];
      filtered[i] = acc;
    }
    this.history = padded.slice(n);

    while (this.position <= n - 1) {
      const i = Math.floor(this.position);
      const frac = this.position - i;
      const a = i < 0 ? this.previous : filtered[i];
      const b = frac > 0 ? filtered[i + 1] : a;
      this.emit(a + frac * (b - a));
      this.position += this.step;
    }
    this.position -= n;
    this.previous = filtered[n - 1];
    return true;
  }

  emit(sample) {
    const clipped = Math.max(-1, Math.min(1, sample));
    this.chunk[this.filled++] = Math.round(clipped * 32767);
    if (this.filled === this.chunkSamples) {
      // Transferred, not copied: the old array is detached (length 0) afterwards, hence chunkSamples.
      this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
      this.chunk = new Int16Array(this.chunkSamples);
      this.filled = 0;
    }
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);
