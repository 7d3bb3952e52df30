// Microphone capture: getUserMedia -> MediaStreamSource -> AudioWorklet (audio-worklet.js), which
// posts ~100 ms batches of 16-bit PCM at `capture.rate` (the context rate, decimated to <= 48 kHz).

const MAX_RATE = 48000; // the most the server accepts
const BATCH_SECONDS = 0.1;
// Noise suppression and echo cancellation are tuned for human listeners; their artifacts cost
// the recogniser words (measured with the stand-in model), so only gain control stays on.
const SPEECH_CONSTRAINTS = {
  channelCount: { ideal: 1 }, echoCancellation: false, noiseSuppression: false, autoGainControl: true,
};

/** An Error with a `code` the page turns into an explanation. */
export class CaptureError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** Map a getUserMedia / Web Audio failure to a CaptureError with an explanation a person can act on. */
function explain(err) {
  if (err instanceof CaptureError) return err;
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return new CaptureError("mic_denied",
      "Microphone access was denied. Allow it in the browser's site settings (the icon next to the address) and press Start again.");
  }
  if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
    return new CaptureError("no_mic", "No microphone was found. Connect one and press Start again.");
  }
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
    return new CaptureError("mic_busy",
      "The microphone could not be opened: another application may be using it, or the system blocked it.");
  }
  return new CaptureError("audio_failed", `Audio capture failed: ${(err && err.message) || err}`);
}

export class MicCapture {
  /**
   * @param {{onAudio: (buffer: ArrayBuffer, samples: number) => void,
   *          onLevel: (peak: number, rms: number) => void,
   *          onEnded: () => void}} handlers
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.context = null;
    this.stream = null;
    this.source = null;
    this.node = null;
    this.rate = 0;
    this.deviceId = "";
    this.flushWaiters = [];
  }

  get running() {
    return this.context !== null;
  }

  /** Open the microphone `deviceId` ("" = default) and start posting audio. */
  async start(deviceId) {
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new CaptureError("insecure_context",
        "Microphone access needs a secure page: open it over https:// (or on localhost).");
    }
    if (typeof AudioWorkletNode === "undefined") {
      throw new CaptureError("audio_failed", "This browser lacks AudioWorklet; use a current Chrome, Edge, Firefox or Safari.");
    }
    try {
      this.stream = await this.openStream(deviceId);
      await this.buildGraph();
    } catch (err) {
      await this.stop();
      throw explain(err);
    }
  }

  async openStream(deviceId) {
    const audio = { ...SPEECH_CONSTRAINTS };
    if (deviceId) audio.deviceId = { exact: deviceId };
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio });
      this.deviceId = deviceId;
      return stream;
    } catch (err) {
      // A remembered device that is gone: fall back to the default one.
      if (deviceId && (err.name === "OverconstrainedError" || err.name === "NotFoundError")) {
        this.deviceId = "";
        return navigator.mediaDevices.getUserMedia({ audio: { ...SPEECH_CONSTRAINTS } });
      }
      throw err;
    }
  }

  watchTrack(stream) {
    for (const track of stream.getAudioTracks()) {
      track.addEventListener("ended", () => {
        if (this.stream === stream) this.handlers.onEnded();
      });
    }
  }

  /** Create the AudioContext and the worklet; the context runs at the device's native rate. */
  async buildGraph() {
    let context = new AudioContext();
    let source;
    try {
      source = context.createMediaStreamSource(this.stream);
    } catch (err) {
      // Firefox refuses to connect a track to a context of another sample rate. Make the context
      // at the track's rate (Firefox may not report it: then try the usual device rates).
      await context.close();
      const reported = this.stream.getAudioTracks()[0]?.getSettings().sampleRate;
      const rates = [...new Set([reported, 48000, 44100, 32000, 16000, 96000].filter(Boolean))];
      source = null;
      for (const rate of rates) {
        context = new AudioContext({ sampleRate: rate });
        try {
          source = context.createMediaStreamSource(this.stream);
          break;
        } catch {
          await context.close();
        }
      }
      if (!source) throw err;
    }
    this.context = context;
    this.source = source;
    await context.audioWorklet.addModule(new URL("audio-worklet.js", import.meta.url).href);
    const factor = Math.max(1, Math.ceil(context.sampleRate / MAX_RATE));
    this.rate = Math.round(context.sampleRate / factor);
    if (this.rate < 8000) {
      throw new CaptureError("audio_failed", `The audio device runs at ${context.sampleRate} Hz; the server needs at least 8000 Hz.`);
    }
    this.node = new AudioWorkletNode(context, "pcm-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { maxRate: MAX_RATE, batchSeconds: BATCH_SECONDS },
    });
    this.node.port.onmessage = (event) => this.onWorkletMessage(event.data);
    // A silent path to the destination keeps every browser pulling audio through the worklet.
    const mute = context.createGain();
    mute.gain.value = 0;
    source.connect(this.node);
    this.node.connect(mute);
    mute.connect(context.destination);
    this.watchTrack(this.stream);
    if (context.state !== "running") await context.resume();
  }

  onWorkletMessage(data) {
    if (data.type === "audio") {
      this.handlers.onAudio(data.buffer, data.samples);
      this.handlers.onLevel(data.peak, data.rms);
    } else if (data.type === "flushed") {
      const waiters = this.flushWaiters;
      this.flushWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  /** Resolve once the worklet has posted every sample it holds. */
  flush() {
    if (!this.node) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, 1000); // never hang a stop on a suspended context
      this.flushWaiters.push(() => { clearTimeout(timer); resolve(); });
      this.node.port.postMessage({ type: "flush" });
    });
  }

  /** Swap to another microphone without touching the session (same context, same rate). */
  async switchDevice(deviceId) {
    if (!this.context) return;
    const stream = await this.openStream(deviceId).catch((err) => { throw explain(err); });
    let source;
    try {
      source = this.context.createMediaStreamSource(stream);
    } catch (err) {
      for (const t of stream.getTracks()) t.stop();
      throw explain(err);
    }
    const old = this.stream;
    this.source.disconnect();
    source.connect(this.node);
    this.source = source;
    this.stream = stream;
    this.watchTrack(stream);
    for (const t of old.getTracks()) t.stop();
  }

  /** Release the microphone and the audio context. */
  async stop() {
    if (this.node) {
      this.node.port.postMessage({ type: "close" });
      this.node.port.onmessage = null;
      this.node.disconnect();
    }
    if (this.source) this.source.disconnect();
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    const context = this.context;
    this.node = null;
    this.source = null;
    this.stream = null;
    this.context = null;
    for (const resolve of this.flushWaiters) resolve();
    this.flushWaiters = [];
    if (context) await context.close().catch(() => {});
  }
}
