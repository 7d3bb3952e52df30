// Transcript formatting: caption timestamps, plain text and WebVTT exports. Pure functions so
// the exports stay the same whatever the page looks like.

/** "mm:ss" (or "h:mm:ss" past an hour) of a time in seconds, for caption timestamps. */
export function formatClock(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(s).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** "hh:mm:ss.ttt", the WebVTT cue timestamp format. */
export function formatVttTime(seconds) {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const h = Math.floor(ms / 3600000);
  const m = Math.floor((ms % 3600000) / 60000);
  const s = Math.floor((ms % 60000) / 1000);
  const t = ms % 1000;
  return `${String(h).padStart(2, "0")}:${String(m).padStart(2, "0")}:${String(s).padStart(2, "0")}.${String(t).padStart(3, "0")}`;
}

/** One "[mm:ss] TEXT" line per caption: what Copy and Download .txt give. */
export function toPlainText(lines) {
  return lines.map((l) => `[${formatClock(l.start)}] ${l.text}`).join("\n") + (lines.length ? "\n" : "");
}

/** A WebVTT file with one cue per caption; a cue always lasts at least 0.5 s (VTT wants end > start). */
export function toWebVtt(lines) {
  const cues = lines.map((l, i) => {
    const end = Math.max(l.end, l.start + 0.5);
    // "-->" may not appear in cue text; the recogniser never emits it, but a caption must not break the file.
    const text = l.text.replace(/-->/g, "->");
    return `${i + 1}\n${formatVttTime(l.start)} --> ${formatVttTime(end)}\n${text}\n`;
  });
  return ["WEBVTT", "", ...cues].join("\n");
}
