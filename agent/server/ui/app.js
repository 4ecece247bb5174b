// The /ui page: asks for the token, polls /status with it, draws the table and the timelines.
// The page itself holds no data; a refused token clears everything it shows.

import { drawTimeline, formatSeconds, parseTime, shortVersion } from "/ui/timeline.js";

const TOKEN_KEY = "secrets-agent.token";
const TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token";
// Failed and overdue first: what needs someone's attention, then what may.
const HEALTH_ORDER = { failed: 0, overdue: 1, stale: 2, deleted: 3, ok: 4 };

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem(TOKEN_KEY), range: "24h", interval: 3, timer: null, status: null };

function element(tag, className = null, text = null) {
  const item = document.createElement(tag);
  if (className) item.className = className;
  if (text !== null) item.textContent = text;
  return item;
}

function showMessage(text, kind = "error") {
  const message = $("message");
  message.textContent = text;
  message.className = `message ${kind}`;
  message.hidden = !text;
}

function clearData() {
  state.status = null;
  $("secrets").tBodies[0].replaceChildren();
  $("timelines").replaceChildren();
  $("summary").replaceChildren();
  $("data").hidden = true;
  $("controls").hidden = true;
}

function askForToken() {
  clearData();
  $("token-form").hidden = false;
  $("token").focus();
}

function forgetToken() {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(state.timer);
}

function ago(now, value) {
  const time = parseTime(value);
  if (time === null) return "—";
  return now - time < 1000 ? "just now" : `${formatSeconds((now - time) / 1000)} ago`;
}

// A secret's name with line-break opportunities after each "/" (never inside a word).
function breakable(name) {
  const parts = [];
  name.split("/").forEach((part, index, all) => {
    parts.push(document.createTextNode(index < all.length - 1 ? `${part}/` : part));
    if (index < all.length - 1) parts.push(document.createElement("wbr"));
  });
  return parts;
}

function sortSecrets(secrets) {
  return [...secrets].sort(
    (a, b) => (HEALTH_ORDER[a.health] ?? 5) - (HEALTH_ORDER[b.health] ?? 5) || a.name.localeCompare(b.name),
  );
}

function badge(secret) {
  const item = element("span", `badge ${secret.health}`, secret.health);
  if (secret.health_reason && secret.health_reason !== secret.health) item.title = secret.health_reason;
  return item;
}

function renderSummary(status, now) {
  const { agent, upstream, cache } = status;
  const parts = [
    `v${agent.version}`,
    `up ${formatSeconds(agent.uptime_seconds)}`,
    agent.ready ? "ready" : `not ready${agent.ready_reason ? `: ${agent.ready_reason}` : ""}`,
    upstream.healthy ? `upstream healthy (last success ${ago(now, upstream.last_success)})` : `upstream failing ×${upstream.failure_burst}`,
    `${cache.secrets} secrets cached, hit ratio ${cache.hit_ratio === null ? "—" : `${(cache.hit_ratio * 100).toFixed(1)} %`}`,
  ];
  const summary = $("summary");
  summary.replaceChildren();
  parts.forEach((text, index) => {
    const bad = (index === 2 && !agent.ready) || (index === 3 && !upstream.healthy);
    summary.append(element("span", bad ? "bad" : null, text));
  });
  if (!upstream.healthy && upstream.last_error) {
    summary.append(element("span", "bad", upstream.last_error));
  }
}

function rotationText(rotation, now) {
  if (!rotation || rotation.enabled === null || rotation.enabled === undefined) return "—"; // not described yet
  if (!rotation.enabled) return "off";
  const schedule = rotation.schedule ? `${rotation.schedule}, ` : "";
  const next = parseTime(rotation.next);
  if (next === null) return rotation.schedule || "on";
  return next >= now ? `${schedule}next in ${formatSeconds((next - now) / 1000)}` : `${schedule}due ${formatSeconds((now - next) / 1000)} ago`;
}

function renderTable(secrets, now) {
  const rows = secrets.map((secret) => {
    const row = element("tr");
    row.dataset.secret = secret.name;
    const name = element("th");
    name.append(...breakable(secret.name));
    name.scope = "row";
    name.title = secret.arn;
    const health = element("td");
    health.append(badge(secret));
    if (secret.health !== "ok" && secret.health_reason) health.append(element("div", "reason", secret.health_reason));
    const version = element("td", "mono", shortVersion(secret.version_id));
    version.title = `${secret.version_id ?? ""} (${(secret.versions || []).length} cached)`;
    const reads = secret.reads || [];
    const hour = reads.reduce((sum, r) => sum + r.last_hour, 0);
    const day = reads.reduce((sum, r) => sum + r.last_day, 0);
    const denied = reads.reduce((sum, r) => sum + r.denied, 0);
    const readsCell = element("td", "num", `${hour} / ${day}`);
    if (denied) readsCell.append(element("span", "denied", ` (${denied} denied)`));
    readsCell.title = reads.map((r) => `${r.client}: ${r.last_hour} / ${r.last_day}, ${r.denied} denied`).join("\n");
    const old = secret.old_version_readers || [];
    const oldCell = element("td", "wide", old.length ? "" : "—");
    for (const reader of old) {
      const item = element("span", "old-reader", `${reader.client} (${shortVersion(reader.version_id)}, ${reader.reads}×)`);
      item.title = `last read ${reader.last_read}`;
      oldCell.append(item);
    }
    row.append(
      name,
      health,
      version,
      element("td", null, ago(now, secret.last_changed)),
      element("td", "wide", rotationText(secret.rotation, now)),
      element("td", "wide num", formatSeconds(secret.staleness_seconds)),
      readsCell,
      oldCell,
    );
    return row;
  });
  $("secrets").tBodies[0].replaceChildren(...rows);
}

function renderTimelines(secrets, now) {
  const container = $("timelines");
  const width = Math.max(280, Math.floor(container.clientWidth || 900));
  const figures = secrets.map((secret) => {
    const figure = element("figure", "secret-timeline");
    figure.dataset.secret = secret.name;
    const caption = element("figcaption");
    caption.append(element("span", "name", secret.name), badge(secret));
    figure.append(caption, drawTimeline(secret, state.range, now, width));
    return figure;
  });
  container.replaceChildren(...figures);
}

function render() {
  const status = state.status;
  if (!status) return;
  const now = parseTime(status.agent.now) ?? Date.now();
  const secrets = sortSecrets(status.secrets || []);
  $("token-form").hidden = true;
  $("controls").hidden = false;
  $("data").hidden = false;
  renderSummary(status, now);
  renderTable(secrets, now);
  renderTimelines(secrets, now);
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.message || body.__type || response.statusText;
  } catch {
    return response.statusText;
  }
}

async function refresh() {
  clearTimeout(state.timer);
  if (!state.token) {
    askForToken();
    return;
  }
  // An answer for a token forgotten or replaced while it was in flight is dropped: never shown, never acted on.
  const token = state.token;
  let response;
  try {
    response = await fetch("/status", {
      headers: { [TOKEN_HEADER]: token },
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    if (state.token !== token) return;
    showMessage(`The agent did not answer (${error.message}); trying again.`);
    schedule();
    return;
  }
  if (state.token !== token) return;
  if (response.status === 403 || response.status === 401) {
    forgetToken();
    askForToken();
    showMessage(`The agent refused this token (${response.status}: ${await errorText(response)}). Enter a valid token.`);
    return;
  }
  if (!response.ok) {
    showMessage(`/status answered ${response.status}: ${await errorText(response)}; trying again.`);
    schedule();
    return;
  }
  const status = await response.json();
  if (state.token !== token) return;
  state.status = status;
  showMessage("");
  render();
  schedule();
}

function schedule() {
  clearTimeout(state.timer);
  // A hidden tab stops asking; it refreshes at once when shown again (visibilitychange below).
  if (state.token && state.interval > 0 && !document.hidden) {
    state.timer = setTimeout(refresh, state.interval * 1000);
  }
}

function start() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (!value) return;
    state.token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    showMessage("Loading…", "info");
    refresh();
  });
  $("forget").addEventListener("click", () => {
    forgetToken();
    showMessage("");
    askForToken();
  });
  for (const radio of document.querySelectorAll("input[name=range]")) {
    radio.addEventListener("change", () => {
      state.range = radio.value;
      render();
    });
  }
  $("interval").addEventListener("change", (event) => {
    state.interval = Number(event.target.value);
    schedule();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.token) refresh();
  });
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(render, 150);
  });
  refresh();
}

start();
