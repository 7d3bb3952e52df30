// Microphone capture on the audio thread: mono mix, optional integer-ratio decimation
// (for devices running above 48 kHz, the most the server takes), conversion to 16-bit
// little-endian PCM, and ~100 ms batches posted to the page as transferable ArrayBuffers.

/** Rate the page will send: the context rate divided by the smallest integer that brings it to <= maxRate. */
function decimationFactor(rate, maxRate) {
  return Math.max(1, Math.ceil(rate / maxRate));
}

class PcmCaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.factor = decimationFactor(sampleRate, opts.maxRate || 48000);
    this.outRate = sampleRate / this.factor;
    this.batchSamples = Math.max(1, Math.round(this.outRate * (opts.batchSeconds || 0.1)));
    this.acc = 0; // sum of the input samples of the output sample being built
    this.accCount = 0;
    this.closed = false;
    this.newBatch();
    this.port.onmessage = (event) => {
      const type = event.data && event.data.type;
      if (type === "flush") {
        this.post(); // whatever is left, so the last words reach the server before `stop`
        this.port.postMessage({ type: "flushed" });
      } else if (type === "close") {
        this.closed = true;
      }
    };
  }

  newBatch() {
    this.buffer = new ArrayBuffer(this.batchSamples * 2);
    this.view = new DataView(this.buffer);
    this.count = 0;
    this.peak = 0;
    this.sumSquares = 0;
  }

  /** Append one mono float sample as s16le, clamped to [-1, 1] before scaling. */
  pushSample(x) {
    const s = x > 1 ? 1 : x < -1 ? -1 : x; // NaN falls through as NaN...
    const v = s === s ? (s < 0 ? Math.round(s * 32768) : Math.round(s * 32767)) : 0; // ...and becomes 0
    this.view.setInt16(this.count * 2, v, true);
    this.count += 1;
    const a = s === s ? Math.abs(s) : 0;
    if (a > this.peak) this.peak = a;
    this.sumSquares += a * a;
    if (this.count === this.batchSamples) this.post();
  }

  post() {
    if (this.count === 0) return;
    const buffer = this.count === this.batchSamples ? this.buffer : this.buffer.slice(0, this.count * 2);
    const rms = Math.sqrt(this.sumSquares / this.count);
    this.port.postMessage({ type: "audio", buffer, samples: this.count, peak: this.peak, rms }, [buffer]);
    this.newBatch();
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0) {
      const channels = input.length;
      const frames = input[0].length;
      for (let i = 0; i < frames; i++) {
        let x = 0;
        for (let c = 0; c < channels; c++) x += input[c][i];
        x /= channels;
        if (this.factor === 1) {
          this.pushSample(x);
        } else {
          // Averaging `factor` consecutive samples is a boxcar low-pass plus decimation: crude,
          // but its aliasing lands far above the speech band the server keeps (8 kHz at 16 kHz).
          this.acc += x;
          this.accCount += 1;
          if (this.accCount === this.factor) {
            this.pushSample(this.acc / this.factor);
            this.acc = 0;
            this.accCount = 0;
          }
        }
      }
    }
    return !this.closed;
  }
}

registerProcessor("pcm-capture", PcmCaptureProcessor);
