// Live captioning page: microphone -> protocol v1 WebSocket (same origin, /v1/stream) -> captions.
//
// Test hook (harmless in production): <body> carries data-state ("idle" | "connecting" |
// "listening" | "stopping" | "error"), data-error (a short code of the last problem or ""),
// and the counts data-partials, data-finals (final messages), data-lines (caption lines) and
// data-sessions (sessions that reached `ready`).

import { MicCapture } from "./capture.js";
import { formatClock, toPlainText, toWebVtt } from "./transcript.js";

const MAX_QUEUE_SECONDS = 15; // audio kept while (re)connecting; older audio is dropped
const STOP_TIMEOUT_MS = 15000; // give up waiting for the last final after this
const START_REFUSALS = new Set([
  "invalid_start", "unsupported_sample_rate", "unsupported_encoding", "unsupported_channels", "invalid_option",
]);

const $ = (id) => document.getElementById(id);
const ui = {
  body: document.body,
  start: $("start"),
  stop: $("stop"),
  mic: $("mic"),
  token: $("token"),
  level: $("level"),
  levelFill: $("level-fill"),
  conn: $("conn"),
  connText: $("conn-text"),
  announce: $("announce"),
  message: $("message"),
  captions: $("captions"),
  finals: $("finals"),
  partial: $("partial"),
  partialStable: document.querySelector("#partial .stable"),
  partialRest: document.querySelector("#partial .unstable"),
  placeholder: $("placeholder"),
  jump: $("jump"),
  copy: $("copy"),
  downloadTxt: $("download-txt"),
  downloadVtt: $("download-vtt"),
  clear: $("clear"),
  large: $("large"),
};

const store = {
  get(key) { try { return localStorage.getItem(key); } catch { return null; } },
  set(key, value) { try { localStorage.setItem(key, value); } catch { /* private mode */ } },
};

// ---------------------------------------------------------------- page state

let phase = "idle";
let wantRunning = false; // the user pressed Start and not Stop: reconnect on failures
let session = null; // the current WebSocket session (see connect())
let attempt = 0; // failed connection attempts since the last `ready`
let retryTimer = null;
let countdownTimer = null;
let stopTimer = null;
let queue = []; // audio waiting for a ready session: {buffer, t0, seconds}
let clock = 0; // seconds of audio captured for this transcript (caption times are on this clock)
let lines = []; // captions: {start, end, text, incomplete}
let partial = null; // {segment, text, stable}
let pinned = true; // captions follow the newest line unless the user scrolled up
const counts = { partials: 0, finals: 0, sessions: 0 };

const capture = new MicCapture({ onAudio, onLevel, onEnded: onMicEnded });

const PHASE_TEXT = {
  idle: "Idle",
  connecting: "Connecting…",
  listening: "Listening",
  stopping: "Finishing…",
  error: "Stopped",
};

function setPhase(next, connText) {
  // Screen readers hear phase changes once, not every tick of a reconnect countdown.
  if (next !== phase) ui.announce.textContent = PHASE_TEXT[next];
  phase = next;
  ui.body.dataset.state = next;
  ui.conn.dataset.conn = next;
  ui.connText.textContent = connText || PHASE_TEXT[next];
  const active = next === "connecting" || next === "listening";
  ui.start.disabled = active || next === "stopping";
  ui.stop.disabled = !active;
  if (!active && next !== "stopping") setLevel(0, 0);
}

function showMessage(text, code = "", kind = "error") {
  ui.body.dataset.error = code;
  if (!ui.message.hidden && ui.message.textContent === text) return; // an alert is read once
  ui.message.textContent = text;
  ui.message.dataset.kind = kind;
  ui.message.hidden = false;
}

function clearMessage() {
  ui.body.dataset.error = "";
  ui.message.textContent = "";
  ui.message.hidden = true;
}

function updateCounts() {
  ui.body.dataset.partials = String(counts.partials);
  ui.body.dataset.finals = String(counts.finals);
  ui.body.dataset.sessions = String(counts.sessions);
  ui.body.dataset.lines = String(lines.length);
}

// ---------------------------------------------------------------- captions

function renderPartial() {
  const text = partial ? partial.text : "";
  const chars = Array.from(text); // `stable` counts Unicode code points (any script), not UTF-16 units
  const stable = partial ? Math.min(Math.max(0, partial.stable | 0), chars.length) : 0;
  ui.partialStable.textContent = chars.slice(0, stable).join("");
  ui.partialRest.textContent = chars.slice(stable).join("");
  ui.partial.classList.toggle("empty", text === "");
  updatePlaceholder();
  autoscroll();
}

function addLine(line) {
  lines.push(line);
  const li = document.createElement("li");
  if (line.incomplete) li.classList.add("incomplete");
  const time = document.createElement("time");
  time.textContent = formatClock(line.start);
  time.dateTime = `PT${line.start.toFixed(2)}S`;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = line.incomplete ? `${line.text} …` : line.text;
  li.append(time, " ", text);
  ui.finals.append(li);
  updateCounts();
  updateTranscriptButtons();
  updatePlaceholder();
  autoscroll();
}

function updatePlaceholder() {
  ui.placeholder.hidden = lines.length > 0 || (partial !== null && partial.text !== "");
}

function updateTranscriptButtons() {
  const empty = lines.length === 0;
  ui.copy.disabled = empty;
  ui.downloadTxt.disabled = empty;
  ui.downloadVtt.disabled = empty;
  ui.clear.disabled = empty && !(partial && partial.text);
}

function isNearBottom() {
  const c = ui.captions;
  return c.scrollHeight - c.scrollTop - c.clientHeight < 48;
}

function autoscroll() {
  if (pinned) ui.captions.scrollTop = ui.captions.scrollHeight;
  ui.jump.hidden = pinned || isNearBottom();
}

ui.captions.addEventListener("scroll", () => {
  pinned = isNearBottom();
  ui.jump.hidden = pinned;
});

ui.jump.addEventListener("click", () => {
  pinned = true;
  autoscroll();
  ui.captions.focus();
});

/** The open segment's partial is all we have when a connection drops: keep it as a marked line. */
function keepPartialAsLine(s) {
  if (partial && partial.text && s) {
    const at = s.lastEnd ?? s.offset ?? clock; // the segment began after the session's last final
    addLine({ start: at, end: Math.max(at, clock), text: partial.text, incomplete: true });
  }
  partial = null;
  renderPartial();
}

// ---------------------------------------------------------------- audio

function onAudio(buffer, samples) {
  const seconds = samples / capture.rate;
  const frame = { buffer, t0: clock, seconds };
  clock += seconds;
  const s = session;
  if (s && s.ready && !s.stopSent && s.ws.readyState === WebSocket.OPEN) {
    sendAudio(s, frame);
  } else if (wantRunning) {
    queue.push(frame);
    let queued = queue.reduce((sum, f) => sum + f.seconds, 0);
    while (queued > MAX_QUEUE_SECONDS && queue.length > 1) queued -= queue.shift().seconds;
  }
}

function sendAudio(s, frame) {
  if (s.offset === null) s.offset = frame.t0; // the session's time 0 on the transcript clock
  s.ws.send(frame.buffer);
}

function onLevel(peak, rms) {
  setLevel(peak, rms);
}

function setLevel(peak, rms) {
  const db = 20 * Math.log10(Math.max(rms, 1e-5));
  const fraction = Math.min(1, Math.max(0, (db + 60) / 60)); // -60 dBFS .. 0 dBFS
  ui.levelFill.style.transform = `scaleX(${fraction.toFixed(3)})`;
  ui.level.classList.toggle("clip", peak >= 0.99);
  ui.level.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
}

function onMicEnded() {
  if (!wantRunning) return;
  showMessage("The microphone was disconnected. Captions stopped; pick a microphone and press Start.", "mic_lost");
  stop({ keepMessage: true });
}

// ---------------------------------------------------------------- connection

function streamUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const token = ui.token.value.trim();
  return `${scheme}//${location.host}/v1/stream${token ? `?token=${encodeURIComponent(token)}` : ""}`;
}

function connect() {
  clearRetry();
  if (!wantRunning) return;
  let ws;
  try {
    ws = new WebSocket(streamUrl());
  } catch (err) {
    fail(`Cannot open a connection: ${err.message}`, "connect_failed");
    return;
  }
  ws.binaryType = "arraybuffer";
  const s = { ws, opened: false, ready: false, stopSent: false, offset: null, lastEnd: null, lastError: null, closed: null };
  session = s;
  setPhase("connecting", attempt > 0 ? "Reconnecting…" : "Connecting…");
  ws.addEventListener("open", () => {
    if (session !== s) return;
    s.opened = true;
    ws.send(JSON.stringify({
      type: "start", sample_rate: capture.rate, encoding: "pcm_s16le", channels: 1, interim_results: true,
    }));
  });
  ws.addEventListener("message", (event) => {
    if (session === s && typeof event.data === "string") onServerMessage(s, event.data);
  });
  ws.addEventListener("close", (event) => {
    if (session === s) onClose(s, event);
  });
}

function onServerMessage(s, raw) {
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch {
    return;
  }
  switch (msg.type) {
    case "ready":
      s.ready = true;
      attempt = 0;
      counts.sessions += 1;
      updateCounts();
      if (!ui.message.hidden) clearMessage(); // a reconnect worked: the problem is over
      setPhase("listening");
      for (const frame of queue) sendAudio(s, frame);
      queue = [];
      break;
    case "partial":
      counts.partials += 1;
      partial = { segment: msg.segment, text: msg.text || "", stable: msg.stable || 0 };
      updateCounts();
      renderPartial();
      updateTranscriptButtons();
      break;
    case "final": {
      counts.finals += 1;
      const offset = s.offset ?? clock;
      s.lastEnd = offset + (msg.end || 0);
      if (msg.text) {
        addLine({ start: offset + (msg.start || 0), end: offset + (msg.end || msg.start || 0), text: msg.text, incomplete: false });
      }
      if (partial && (partial.segment === undefined || partial.segment <= msg.segment)) partial = null;
      updateCounts();
      renderPartial();
      break;
    }
    case "error":
      s.lastError = msg;
      if (START_REFUSALS.has(msg.code)) {
        fail(`The server refused the audio settings: ${msg.message}`, msg.code);
      } else if (!msg.fatal) {
        console.warn("streaming-asr:", msg.code, msg.message);
      }
      break;
    case "closed":
      s.closed = msg;
      break;
    default:
      break;
  }
}

async function onClose(s, event) {
  session = null;
  if (s.stopSent || !wantRunning) {
    finishStop(s);
    return;
  }
  keepPartialAsLine(s);
  const code = s.lastError ? s.lastError.code : "";
  if (code === "server_full" || event.code === 1013) {
    scheduleRetry("The server is full: every captioning session is in use. Trying again shortly; your transcript is kept.", "server_full");
  } else if (event.code === 4001 || event.code === 4000) {
    // Session length limit or idle timeout: carry on in a fresh session right away.
    scheduleRetry("", "", 0);
  } else if (event.code === 1001 || code === "shutting_down") {
    scheduleRetry("The server is restarting. Captions resume when it is back; your transcript is kept.", "server_restarting");
  } else if (!s.opened) {
    await explainRefusedHandshake();
  } else if (event.code === 1011 || event.code === 1008) {
    const why = s.lastError ? s.lastError.message : `close code ${event.code}`;
    scheduleRetry(`The server ended the session (${why}). Reconnecting; your transcript is kept.`, code || "server_error");
  } else {
    scheduleRetry("The connection to the server was lost. Reconnecting; your transcript is kept.", "disconnected");
  }
}

/** A handshake that never opened: ask /v1/auth whether the token is the reason. */
async function explainRefusedHandshake() {
  const token = ui.token.value.trim();
  let status = 0;
  try {
    const response = await fetch(`/v1/auth${token ? `?token=${encodeURIComponent(token)}` : ""}`, { cache: "no-store" });
    status = response.status;
  } catch {
    status = 0; // nothing answered
  }
  if (!wantRunning) {
    finishStop();
    return;
  }
  let busy = "";
  if (status === 200) {
    // the token is fine: a full or draining server answers the handshake with 503; readiness says which
    try {
      const ready = await fetch("/health/ready", { cache: "no-store" });
      if (ready.status === 503) busy = (await ready.json()).reason || "";
    } catch {
      busy = "";
    }
  }
  if (busy === "full") {
    scheduleRetry("The server is full: every captioning session is in use. Trying again shortly; your transcript is kept.", "server_full");
  } else if (busy === "draining") {
    scheduleRetry("The server is restarting. Captions resume when it is back; your transcript is kept.", "server_restarting");
  } else if (status === 401 || status === 403) {
    const text = token
      ? "The server refused the access token. Check it and press Start again."
      : "This server needs an access token. Enter it above and press Start again.";
    fail(text, "token_refused");
    ui.token.focus();
  } else if (status === 0) {
    scheduleRetry("Cannot reach the server. Captions resume automatically when it is back; your transcript is kept.", "server_unreachable");
  } else {
    scheduleRetry(`The server did not accept the connection (HTTP ${status} on /v1/auth). Trying again.`, "connect_failed");
  }
}

function backoffMs(n) {
  const base = Math.min(15, 2 ** n); // 1, 2, 4, 8, 15, 15, ... seconds
  return Math.round(base * 1000 * (0.8 + 0.4 * Math.random()));
}

function scheduleRetry(text, code, delayMs) {
  clearRetry();
  const delay = delayMs ?? backoffMs(attempt);
  attempt += 1;
  if (text) showMessage(text, code);
  const due = Date.now() + delay;
  const tick = () => {
    const left = Math.max(0, Math.ceil((due - Date.now()) / 1000));
    setPhase("connecting", left > 0 ? `Reconnecting in ${left} s` : "Reconnecting…");
  };
  tick();
  countdownTimer = setInterval(tick, 500);
  retryTimer = setTimeout(connect, delay);
}

function clearRetry() {
  clearTimeout(retryTimer);
  clearInterval(countdownTimer);
  retryTimer = null;
  countdownTimer = null;
}

/** Something the page cannot fix by retrying: stop everything and say why. */
function fail(text, code) {
  wantRunning = false;
  clearRetry();
  showMessage(text, code);
  const s = session;
  session = null;
  if (s && s.ws.readyState <= WebSocket.OPEN) s.ws.close(1000);
  queue = [];
  keepPartialAsLine(s);
  capture.stop();
  setPhase("error");
}

// ---------------------------------------------------------------- start / stop

async function start() {
  if (phase !== "idle" && phase !== "error") return;
  clearMessage();
  wantRunning = true;
  attempt = 0;
  queue = [];
  setPhase("connecting");
  try {
    await capture.start(ui.mic.value);
  } catch (err) {
    wantRunning = false;
    showMessage(err.message, err.code || "audio_failed");
    setPhase("error");
    return;
  }
  if (!wantRunning) { // Stop pressed while the permission prompt was up
    await capture.stop();
    return;
  }
  await refreshDevices();
  connect();
}

async function stop({ keepMessage = false } = {}) {
  if (!wantRunning && phase !== "connecting" && phase !== "listening") return;
  wantRunning = false;
  clearRetry();
  queue = [];
  if (!keepMessage) clearMessage();
  const s = session;
  if (s && s.ready && s.ws.readyState === WebSocket.OPEN) {
    setPhase("stopping");
    await capture.flush(); // the last samples go out (onAudio) before `stop`
    await capture.stop();
    if (s.ws.readyState === WebSocket.OPEN) {
      s.stopSent = true;
      s.ws.send(JSON.stringify({ type: "stop" }));
      stopTimer = setTimeout(() => {
        if (s.ws.readyState !== WebSocket.CLOSED) s.ws.close(1000);
        if (session === s) session = null;
        finishStop(s);
      }, STOP_TIMEOUT_MS);
      return; // the server answers with the last final, `closed`, then closes: onClose -> finishStop
    }
  }
  session = null;
  if (s && s.ws.readyState <= WebSocket.OPEN) s.ws.close(1000);
  keepPartialAsLine(s);
  await capture.stop();
  finishStop();
}

/** The session is over (or given up on): release everything; an unanswered partial stays as a marked line. */
function finishStop(s = null) {
  clearTimeout(stopTimer);
  stopTimer = null;
  if (wantRunning) return;
  capture.stop();
  keepPartialAsLine(s);
  setPhase(ui.body.dataset.error && phase === "error" ? "error" : "idle");
}

// ---------------------------------------------------------------- microphones

async function refreshDevices() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  let devices = [];
  try {
    devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  } catch {
    return;
  }
  if (devices.every((d) => !d.label)) return; // no permission yet: labels and ids are hidden
  const wanted = capture.deviceId || ui.mic.value || store.get("mic") || "";
  ui.mic.replaceChildren();
  const def = document.createElement("option");
  def.value = "";
  def.textContent = "Default microphone";
  ui.mic.append(def);
  devices.forEach((d, i) => {
    if (d.deviceId === "default" || d.deviceId === "") return; // the default entry is already there
    const opt = document.createElement("option");
    opt.value = d.deviceId;
    opt.textContent = d.label || `Microphone ${i + 1}`;
    ui.mic.append(opt);
  });
  ui.mic.value = [...ui.mic.options].some((o) => o.value === wanted) ? wanted : "";
}

ui.mic.addEventListener("change", async () => {
  store.set("mic", ui.mic.value);
  if (!capture.running) return;
  try {
    await capture.switchDevice(ui.mic.value);
  } catch (err) {
    showMessage(`Could not switch microphone: ${err.message}`, err.code || "audio_failed");
  }
});

if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener("devicechange", () => { refreshDevices(); });
}

// ---------------------------------------------------------------- transcript actions

function transcriptLines() {
  return lines.map((l) => ({ start: l.start, end: l.end, text: l.incomplete ? `${l.text} …` : l.text }));
}

function flashNote(button, text) {
  const original = button.dataset.label || button.textContent;
  button.dataset.label = original;
  button.textContent = text;
  setTimeout(() => { button.textContent = original; }, 1500);
}

async function copyTranscript() {
  const text = toPlainText(transcriptLines());
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No async clipboard (plain http on a LAN address): the selection fallback still works.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  flashNote(ui.copy, "Copied ✓");
  ui.announce.textContent = "Transcript copied";
}

function download(text, extension, type) {
  const stamp = new Date().toISOString().slice(0, 16).replace(/[-:]/g, "").replace("T", "-");
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = `captions-${stamp}.${extension}`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function clearTranscript() {
  lines = [];
  ui.finals.replaceChildren();
  if (!capture.running) clock = 0; // a fresh transcript starts at 00:00 when nothing is recording
  partial = null;
  renderPartial();
  updateCounts();
  updateTranscriptButtons();
}

function setLarge(on) {
  ui.body.classList.toggle("large", on);
  ui.large.setAttribute("aria-pressed", String(on));
  store.set("large", on ? "1" : "0");
  autoscroll();
}

// ---------------------------------------------------------------- wiring

// Start is the form's submit button, so Enter in the token field starts too.
$("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  start();
});
ui.stop.addEventListener("click", () => { stop(); });
ui.copy.addEventListener("click", () => { copyTranscript(); });
ui.downloadTxt.addEventListener("click", () => download(toPlainText(transcriptLines()), "txt", "text/plain;charset=utf-8"));
ui.downloadVtt.addEventListener("click", () => download(toWebVtt(transcriptLines()), "vtt", "text/vtt;charset=utf-8"));
ui.clear.addEventListener("click", clearTranscript);
ui.large.addEventListener("click", () => setLarge(ui.large.getAttribute("aria-pressed") !== "true"));

window.addEventListener("online", () => {
  if (wantRunning && retryTimer !== null) connect(); // network back: do not wait out the backoff
});
window.addEventListener("pagehide", () => {
  if (session && session.ws.readyState === WebSocket.OPEN) session.ws.close(1000);
});

const params = new URLSearchParams(location.search);
if (params.has("token")) ui.token.value = params.get("token");
setLarge(store.get("large") === "1");
setPhase("idle");
updateCounts();
updateTranscriptButtons();
updatePlaceholder();
refreshDevices();
