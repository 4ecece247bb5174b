// One secret's timeline as SVG: non-ok spans shaded, rotations as markers labelled with
// their version (first 8 characters) and detection delay, and one read-density strip per client.
// Everything is positioned against the agent's clock (status.agent.now), not the browser's.

const SVG = "http://www.w3.org/2000/svg";
const HOUR = 3600 * 1000;

const DAY = 24 * HOUR;
// Each range's span and its tick spacings, finest first: the first at least MIN_TICK pixels apart is used.
export const RANGES = {
  "24h": { span: DAY, ticks: [HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR] },
  "7d": { span: 7 * DAY, ticks: [DAY, 2 * DAY, 7 * DAY] },
  "30d": { span: 30 * DAY, ticks: [2 * DAY, 5 * DAY, 10 * DAY, 15 * DAY] },
};
const MIN_TICK = 72;
const CHAR = 6.8; // width of one character of an 11 px monospace label, about
const SHADES = 5; // read-density levels

const BAND = 40; // rotation and health band, markers' labels included
const STRIP = 14; // one client's read strip
const AXIS = 18;

function node(tag, attrs = {}, text = null) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    element.setAttribute(key, String(value));
  }
  if (text !== null) {
    element.textContent = text;
  }
  return element;
}

export function parseTime(value) {
  return value ? Date.parse(value) : null;
}

export function shortVersion(id) {
  return id ? id.slice(0, 8) : "—";
}

export function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined) {
    return "—";
  }
  const s = Math.abs(seconds);
  if (s < 10) return `${seconds.toFixed(1)} s`;
  if (s < 120) return `${Math.round(seconds)} s`;
  if (s < 7200) return `${Math.round(seconds / 60)} min`;
  if (s < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function tickLabel(time, range) {
  const date = new Date(time);
  if (range === "24h") {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  }
  if (range === "7d") {
    return date.toLocaleDateString([], { weekday: "short", day: "numeric" });
  }
  return date.toLocaleDateString([], { month: "short", day: "numeric" });
}

function truncate(text, chars) {
  return text.length > chars ? `${text.slice(0, chars - 1)}…` : text;
}

// Hourly [[hour_start, count], ...] summed into buckets at least `minWidth` pixels wide.
function buckets(hourly, start, end, x, minWidth) {
  const hourWidth = x(start + HOUR) - x(start);
  const hoursPerBucket = Math.max(1, Math.ceil(minWidth / hourWidth));
  const size = hoursPerBucket * HOUR;
  const first = Math.floor(start / HOUR) * HOUR;
  // RFC 3339 UTC strings compare as text: hours before the range are skipped without parsing them.
  const cutoff = new Date(start - HOUR).toISOString().slice(0, 19);
  const sums = new Map();
  for (const [hour, count] of hourly) {
    if (hour < cutoff) continue;
    const time = parseTime(hour);
    if (time === null || time + HOUR <= start || time > end) continue;
    const key = first + Math.floor((time - first) / size) * size;
    sums.set(key, (sums.get(key) || 0) + count);
  }
  return { sums, size };
}

/**
 * Draw `secret`'s timeline for `range` ("24h", "7d", "30d") ending at `now` (ms), `width` pixels wide.
 * Returns an <svg> element; every string from the agent goes in through textContent or an attribute.
 */
export function drawTimeline(secret, range, now, width) {
  const { span, ticks } = RANGES[range];
  const start = now - span;
  const gutter = width < 520 ? 70 : 120;
  const right = width - 8;
  const x = (time) => gutter + ((Math.min(Math.max(time, start), now) - start) / span) * (right - gutter);
  const reads = secret.reads || [];
  const height = BAND + reads.length * STRIP + AXIS + 4;
  const svg = node("svg", {
    class: "timeline",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": `timeline of ${secret.name}`,
  });

  // Background and hour/day grid, ticks on local-time hour or day boundaries.
  const tick = ticks.find((step) => (step / span) * (right - gutter) >= MIN_TICK) ?? ticks[ticks.length - 1];
  svg.append(node("rect", { class: "band", x: gutter, y: 14, width: right - gutter, height: BAND - 16 }));
  const offset = new Date(now).getTimezoneOffset() * 60 * 1000;
  const firstTick = Math.ceil((start - offset) / tick) * tick + offset;
  const bottom = BAND + reads.length * STRIP;
  for (let time = firstTick; time <= now; time += tick) {
    const px = x(time);
    svg.append(node("line", { class: "grid", x1: px, x2: px, y1: 14, y2: bottom }));
    const anchor = px > right - 30 ? "end" : px < gutter + 30 ? "start" : "middle";
    svg.append(node("text", { class: "axis", x: px, y: bottom + 13, "text-anchor": anchor }, tickLabel(time, range)));
  }
  svg.append(node("text", { class: "row-label", x: 4, y: 31 }, "rotations"));

  // Non-ok spans, shaded across the band.
  for (const item of secret.spans || []) {
    const from = parseTime(item.start);
    const to = parseTime(item.end) ?? now;
    if (from === null || to < start || from > now) continue;
    const x1 = x(from);
    const rect = node("rect", {
      class: `span ${item.health}`,
      x: x1,
      y: 14,
      width: Math.max(2, x(to) - x1),
      height: BAND - 16,
    });
    rect.append(node("title", {}, `${item.health} from ${item.start} to ${item.end ?? "now"}`));
    svg.append(rect);
  }

  // Read density, one strip per client.
  reads.forEach((client, index) => {
    const y = BAND + index * STRIP;
    const background = node("rect", { class: "strip", x: gutter, y: y + 1, width: right - gutter, height: STRIP - 3 });
    svg.append(background);
    const { sums, size } = buckets(client.hourly || [], start, now, x, 4);
    const most = Math.max(1, ...sums.values());
    // One path per shade instead of one rect per bucket: 30 days of many secrets stay a small DOM.
    const shades = Array.from({ length: SHADES }, () => []);
    let total = 0;
    for (const [time, count] of sums) {
      total += count;
      const x1 = x(time);
      const w = Math.max(4, x(time + size) - x1); // the current hour may have just begun: keep it visible
      const shade = Math.min(SHADES - 1, Math.floor(Math.sqrt(count / most) * SHADES));
      shades[shade].push(`M${x1.toFixed(1)} ${y + 1}h${w.toFixed(1)}v${STRIP - 3}h${(-w).toFixed(1)}z`);
    }
    shades.forEach((parts, shade) => {
      if (parts.length) {
        const opacity = (0.2 + (0.8 * (shade + 1)) / SHADES).toFixed(2);
        svg.append(node("path", { class: "reads", d: parts.join(""), "fill-opacity": opacity }));
      }
    });
    background.append(
      node("title", {}, `${client.client}: ${total} reads in this range (at most ${most} in ${size / HOUR} h)`),
    );
    const name = truncate(client.client, width < 520 ? 7 : 12);
    const label = node("text", { class: "row-label", x: 4, y: y + STRIP - 3 }, `${name} ${total}`);
    label.append(node("title", {}, `${client.client}: ${total} reads in this range`));
    svg.append(label);
  });

  // Rotations, newest first (history's order). A label sits just left of its marker, whose line then
  // rises through the label's row; a label that would overlap a newer one's is left out (hover for it).
  let freeUntil = Infinity;
  for (const entry of secret.history || []) {
    const seen = parseTime(entry.seen_at);
    if (seen === null || seen < start || seen > now) continue;
    const px = x(seen);
    const group = node("g", { class: `rotation how-${entry.how}`, "data-version": entry.version_id });
    const delay = entry.delay_seconds === null || entry.delay_seconds === undefined ? "" : ` · ${formatSeconds(entry.delay_seconds)}`;
    const text = `${shortVersion(entry.version_id)}${delay}`;
    const estimate = text.length * CHAR;
    const flip = px - 4 - estimate < 2; // no room on the left (near the start): the label goes right
    const left = flip ? px + 4 : px - 4 - estimate;
    const labelled = left + estimate < freeUntil - 6;
    group.append(node("line", { x1: px, x2: px, y1: labelled ? 1 : 12, y2: bottom }));
    group.append(node("circle", { cx: px, cy: 14, r: 3.5 }));
    if (labelled) {
      group.append(node("text", { class: "marker", x: flip ? px + 4 : px - 4, y: 10, "text-anchor": flip ? "start" : "end" }, text));
      freeUntil = Math.min(left, px - 2);
    }
    const previous = entry.previous_version_id ? `${entry.previous_version_id} → ` : "";
    group.append(
      node("title", {}, `${previous}${entry.version_id}\nseen ${entry.seen_at} (${entry.how})\ndetection delay ${formatSeconds(entry.delay_seconds)}`),
    );
    svg.append(group);
  }
  return svg;
}
