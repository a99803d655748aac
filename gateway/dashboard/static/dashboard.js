/* The dashboard: reads /dashboard/api/* every few seconds and draws with hand-written SVG.
   Every value from the gateway goes into the page as text (textContent, SVG attributes with
   numbers): nothing received is ever parsed as HTML. */
"use strict";

const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
const PANELS = ["spend", "traffic", "cache", "budgets", "health", "requests"];
const state = { dim: "by_model", timer: null, data: {} };

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs, cls) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (cls) node.setAttribute("class", cls);
  return node;
}

/* Formatting for people */

const intFmt = new Intl.NumberFormat("en-US");

function usd(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return "–";
  if (n === 0) return "$0.00";
  const abs = Math.abs(n);
  if (abs >= 1) return "$" + n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  if (abs >= 0.01) return "$" + n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 4 });
  // Under a cent: the ledger's micro-dollars, exactly.
  return "$" + n.toFixed(6).replace(/0+$/, "");
}

function count(n) { return n === null || n === undefined ? "–" : intFmt.format(n); }

function pct(ratio) {
  if (ratio === null || ratio === undefined) return "–";
  const p = 100 * ratio;
  return (p === 0 || p >= 10 ? p.toFixed(0) : p.toFixed(1)) + "%";
}

function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value >= 1000) return (value / 1000).toFixed(value >= 10000 ? 0 : 2) + " s";
  if (value >= 10) return value.toFixed(0) + " ms";
  return value.toFixed(value >= 1 ? 1 : 2) + " ms";
}

function ago(when) {
  const t = typeof when === "number" ? when * 1000 : Date.parse(when);
  if (!Number.isFinite(t)) return "–";
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 5) return "just now";
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}

function shortDay(iso) {
  const [, m, d] = iso.split("-");
  return Number(d) + "/" + Number(m);
}

function clock(epoch) {
  const d = new Date(epoch * 1000);
  return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
}

/* Charts */

/* Draw at the host's own pixel width so that labels keep their size. */
function width(host, fallback) {
  return Math.max(280, Math.round(host.clientWidth || fallback));
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/* A count axis: four equal whole steps, so each gridline's label is its exact value. */
function countMax(v) {
  const quarter = Math.max(1, Math.ceil(v / 4));
  const p = Math.pow(10, Math.floor(Math.log10(quarter)));
  for (const m of [1, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
    if (Number.isInteger(m * p) && m * p >= quarter) return 4 * m * p;
  }
  return 40 * p;
}

/* A milliseconds axis: quarters that ms() shows exactly (0.05 to 0.5 ms, then whole numbers). */
function msMax(v) {
  for (const step of [0.05, 0.1, 0.25, 0.5]) if (step >= v / 4) return 4 * step;
  return countMax(v);
}

function frame(width, height, pad, max, fmt) {
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const h = height - pad.t - pad.b;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + h - (h * i) / 4;
    root.append(svg("line", { x1: pad.l, x2: width - pad.r, y1: y, y2: y }, i ? "gridline" : "axis"));
    const label = svg("text", { x: pad.l - 6, y: y + 3, "text-anchor": "end" });
    label.textContent = fmt((max * i) / 4);
    root.append(label);
  }
  return root;
}

function stackedBars(host, days, series) {
  const W = width(host, 900), H = 240, pad = { t: 10, r: 8, b: 22, l: 64 };
  const totals = days.map((_, i) => series.reduce((sum, s) => sum + Number(s.values_usd[i]), 0));
  const max = niceMax(Math.max(...totals));
  const root = frame(W, H, pad, max, usd);
  const h = H - pad.t - pad.b, step = (W - pad.l - pad.r) / days.length, bw = step * 0.7;
  days.forEach((day, i) => {
    let y = pad.t + h;
    series.forEach((s, k) => {
      const v = Number(s.values_usd[i]);
      if (!(v > 0)) return;
      const bh = Math.max(1, (v / max) * h);
      y -= bh;
      const rect = svg("rect", { x: pad.l + i * step + (step - bw) / 2, y, width: bw, height: bh }, "s" + (k % 8));
      const tip = svg("title");
      tip.textContent = `${day} · ${s.label}: ${usd(v)}`;
      rect.append(tip);
      root.append(rect);
    });
    if (i % 5 === 4 || i === days.length - 1) {
      const t = svg("text", { x: pad.l + i * step + step / 2, y: H - 6, "text-anchor": "middle" });
      t.textContent = shortDay(day);
      root.append(t);
    }
  });
  host.replaceChildren(root);
}

function minuteAxis(root, minutes, W, H, pad) {
  const step = (W - pad.l - pad.r) / minutes.length;
  minutes.forEach((m, i) => {
    if (i % 15 === 0 || i === minutes.length - 1) {
      const t = svg("text", { x: pad.l + i * step + step / 2, y: H - 6, "text-anchor": "middle" });
      t.textContent = i === minutes.length - 1 ? "now" : clock(m.t);
      root.append(t);
    }
  });
  return step;
}

function trafficChart(host, minutes) {
  const W = width(host, 420), H = 180, pad = { t: 10, r: 34, b: 22, l: 44 };
  const max = countMax(Math.max(...minutes.map((m) => m.requests)));
  const root = frame(W, H, pad, max, count);
  const h = H - pad.t - pad.b;
  const step = minuteAxis(root, minutes, W, H, pad);
  const points = [];
  minutes.forEach((m, i) => {
    const x = pad.l + i * step;
    if (m.requests) {
      const bh = Math.max(1, (m.requests / max) * h);
      const rect = svg("rect", { x: x + step * 0.1, y: pad.t + h - bh, width: step * 0.8, height: bh }, "bar");
      const tip = svg("title");
      tip.textContent = `${clock(m.t)}: ${count(m.requests)} requests, ${count(m.errors)} errors`;
      rect.append(tip);
      root.append(rect);
      points.push(`${x + step / 2},${pad.t + h - (m.error_rate || 0) * h}`);
    }
  });
  if (points.length > 1) root.append(svg("polyline", { points: points.join(" ") }, "rate"));
  for (const p of points) {
    const [cx, cy] = p.split(",");
    root.append(svg("circle", { cx, cy, r: 2.5 }, "rate-dot"));
  }
  const right = svg("text", { x: W - pad.r + 4, y: pad.t + 3 });
  right.textContent = "100%";
  root.append(right);
  host.replaceChildren(root);
}

function latencyChart(host, minutes) {
  const W = width(host, 420), H = 180, pad = { t: 10, r: 8, b: 22, l: 54 };
  const keys = [["added_p50_ms", "Added p50", "s0"], ["added_p99_ms", "Added p99", "s0 dashed"],
                ["upstream_p50_ms", "Upstream p50", "s1"], ["upstream_p99_ms", "Upstream p99", "s1 dashed"]];
  const values = minutes.flatMap((m) => keys.map(([k]) => m[k] || 0));
  const max = msMax(Math.max(...values));
  const root = frame(W, H, pad, max, ms);
  const h = H - pad.t - pad.b;
  const step = minuteAxis(root, minutes, W, H, pad);
  for (const [k, , cls] of keys) {
    const pts = [];
    minutes.forEach((m, i) => {
      if (m[k] !== null && m[k] !== undefined) pts.push(`${pad.l + i * step + step / 2},${pad.t + h - (m[k] / max) * h}`);
    });
    if (pts.length > 1) root.append(svg("polyline", { points: pts.join(" ") }, "line " + cls));
    if (!cls.includes("dashed")) {
      for (const p of pts) {
        const [cx, cy] = p.split(",");
        root.append(svg("circle", { cx, cy, r: 2.5 }, "dot " + cls));
      }
    }
  }
  host.replaceChildren(root);
  const legend = $("latency-legend");
  legend.replaceChildren(...keys.map(([, label, cls]) => {
    const li = el("li");
    li.append(el("span", "swatch " + cls.split(" ")[0]), el("span", null, label + (cls.includes("dashed") ? " (dashed)" : "")));
    return li;
  }));
}

/* Panels */

function showEmpty(id, empty, ...hideWhenEmpty) {
  $(id).hidden = !empty;
  for (const other of hideWhenEmpty) $(other).hidden = empty;
}

function renderSpend(d) {
  $("total-cost").textContent = usd(d.totals.cost_usd);
  $("total-cost").dataset.usd = d.totals.cost_usd;
  $("total-requests").textContent = count(d.totals.requests);
  $("total-errors").textContent = count(d.totals.errors);
  $("total-saved").textContent = usd(d.totals.saved_usd);
  const series = d[state.dim] || [];
  const empty = series.length === 0;
  showEmpty("spend-empty", empty, "spend-chart", "spend-legend");
  if (empty) return;
  stackedBars($("spend-chart"), d.days, series);
  $("spend-legend").replaceChildren(...series.map((s, k) => {
    const li = el("li");
    li.append(el("span", "swatch s" + (k % 8)), el("span", "series-name", s.label));
    if (s.prefix) li.append(el("code", "muted", s.prefix + "…"));
    li.append(el("span", "amount", usd(s.total_usd)));
    return li;
  }));
}

function scopeBadge(id, d) {
  $(id).textContent = `worker ${d.worker_pid}`;
  $(id).title = "Per worker: other workers and replicas keep their own.";
}

function renderTraffic(d) {
  scopeBadge("traffic-scope", d);
  scopeBadge("latency-scope", d);
  $("hour-requests").textContent = count(d.hour.requests);
  $("hour-error-rate").textContent = pct(d.hour.error_rate);
  $("added-p50").textContent = ms(d.hour.added_p50_ms);
  $("added-p99").textContent = ms(d.hour.added_p99_ms);
  $("upstream-p50").textContent = ms(d.hour.upstream_p50_ms);
  $("upstream-p99").textContent = ms(d.hour.upstream_p99_ms);
  const empty = d.hour.requests === 0;
  showEmpty("traffic-empty", empty, "traffic-chart");
  showEmpty("latency-empty", empty, "latency-chart", "latency-legend");
  if (empty) return;
  trafficChart($("traffic-chart"), d.minutes);
  latencyChart($("latency-chart"), d.minutes);
}

function renderCache(d) {
  const h = d.hour;
  $("cache-exact").textContent = pct(h.exact_hit_rate);
  $("cache-semantic").textContent = pct(h.semantic_hit_rate);
  $("cache-saved-today").textContent = usd(d.saved.today_usd);
  $("cache-lookups").textContent = count(h.lookups);
  const empty = h.lookups === 0;
  showEmpty("cache-empty", empty, "cache-meter");
  if (empty) return;
  const parts = [["exact", h.exact_hits], ["semantic", h.semantic_hits], ["coalesced", h.coalesced]];
  $("cache-meter").replaceChildren(...parts.map(([cls, n]) => {
    const span = el("span", cls);
    span.style.width = (100 * n / h.lookups) + "%";
    span.title = `${cls}: ${count(n)}`;
    return span;
  }));
}

function cells(row, values) {
  for (const [text, cls] of values) row.append(el("td", cls || null, text));
  return row;
}

function renderBudgets(d) {
  const body = $("budgets-table").tBodies[0];
  showEmpty("budgets-empty", d.data.length === 0, "budgets-table");
  body.replaceChildren(...d.data.map((b) => {
    const tr = cells(el("tr", b.alert ? "alert" : null), [
      [b.name, "name"], [b.team || "–"], [b.period], [usd(b.spent_usd), "num"], [usd(b.budget_usd), "num"]]);
    const usage = el("div", "usage");
    const track = el("div", "track");
    const fill = el("div", "fill" + (b.percent_used >= 100 ? " over" : b.alert ? " alert" : ""));
    fill.style.width = Math.min(100, b.percent_used) + "%";
    track.append(fill);
    usage.append(track, el("span", "num", b.percent_used.toFixed(b.percent_used >= 10 ? 0 : 1) + "%"));
    const td = el("td");
    td.append(usage);
    tr.append(td);
    return tr;
  }));
  labelCells($("budgets-table"));
}

function renderHealth(d) {
  scopeBadge("health-scope", d);
  const body = $("health-table").tBodies[0];
  showEmpty("health-empty", d.data.length === 0, "health-table");
  body.replaceChildren(...d.data.map((m) => {
    const tr = el("tr");
    tr.append(el("td", "name", m.model));
    const state = el("td");
    state.append(el("span", "pill " + m.state.replace(/[^a-z_]/g, ""), m.state.replace("_", "-")));
    tr.append(state);
    const deps = el("td", "name", m.deployments.length
      ? m.deployments.map((x) => `${x.name}: ${x.state.replace("_", "-")}`).join(", ") : "–");
    tr.append(deps);
    const to = Object.entries(m.fallbacks_to).map(([name, n]) => `${name} ×${n}`).join(", ");
    tr.append(el("td", "num", count(m.fallbacks_last_hour) + (to ? ` → ${to}` : "")));
    const e = m.last_error;
    tr.append(el("td", null, e ? `${e.status} ${e.code}, ${ago(e.at)}` : "–"));
    return tr;
  }));
  labelCells($("health-table"));
}

function renderRequests(d) {
  scopeBadge("requests-scope", d);
  const body = $("requests-table").tBodies[0];
  showEmpty("requests-empty", d.data.length === 0, "requests-table");
  body.replaceChildren(...d.data.map((r) => {
    const model = r.served_model && r.served_model !== r.requested_model
      ? `${r.requested_model} → ${r.served_model}` : (r.requested_model || r.served_model || "–");
    const tr = cells(el("tr"), [[ago(r.time)], [r.key || "–", "name key"], [model, "name"]]);
    const status = el("td");
    status.append(el("span", "pill " + (r.status >= 500 ? "bad" : r.status >= 400 ? "warn" : "ok"),
      r.error_code ? `${r.status} ${r.error_code}` : r.status));
    tr.append(status);
    return cells(tr, [[ms(r.latency_ms), "num"], [r.cost_usd === null ? "–" : usd(r.cost_usd), "num"], [r.cache || "–"]]);
  }));
  labelCells($("requests-table"));
}

/* Phones show each row as a small card: every cell carries its column's name. */
function labelCells(table) {
  const names = [...table.tHead.rows[0].cells].map((th) => th.textContent);
  for (const row of table.tBodies[0].rows) {
    [...row.cells].forEach((td, i) => { td.dataset.label = names[i] || ""; });
  }
}

const RENDER = { spend: renderSpend, traffic: renderTraffic, cache: renderCache,
                 budgets: renderBudgets, health: renderHealth, requests: renderRequests };

/* Session and refresh */

class LoggedOut extends Error {}

async function getJSON(path) {
  const res = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (res.status === 401) throw new LoggedOut();
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function showLogin(message) {
  clearTimeout(state.timer);
  $("dashboard").hidden = true;
  $("logout-form").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("admin-key").focus();
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    const results = await Promise.all(PANELS.map((p) => getJSON(`/dashboard/api/${p}`)));
    PANELS.forEach((p, i) => { state.data[p] = results[i]; RENDER[p](results[i]); });
    document.body.dataset.loaded = "true";
    $("updated").textContent = "Updated " + new Date().toLocaleTimeString() + " · every " + REFRESH_MS / 1000 + " s";
  } catch (err) {
    if (err instanceof LoggedOut) return showLogin("Your session ended; log in again.");
    $("updated").textContent = "Update failed (" + err.message + "); retrying";
  }
  state.timer = setTimeout(refresh, REFRESH_MS);
}

function showDashboard() {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout-form").hidden = false;
  refresh();
}

async function login(event) {
  event.preventDefault();
  const input = $("admin-key");
  const res = await fetch("/dashboard/login", {
    method: "POST", credentials: "same-origin",
    headers: { Accept: "application/json", "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ admin_key: input.value }),
  });
  input.value = "";
  if (res.ok) return showDashboard();
  let message = "Login failed.";
  try { message = (await res.json()).error.message; } catch (_) { /* keep the generic text */ }
  showLogin(message);
}

async function logout(event) {
  event.preventDefault();
  await fetch("/dashboard/logout", { method: "POST", credentials: "same-origin", headers: { Accept: "application/json" } });
  showLogin("");
}

function start() {
  $("login-form").addEventListener("submit", login);
  $("logout-form").addEventListener("submit", logout);
  for (const button of document.querySelectorAll(".toggle button")) {
    button.addEventListener("click", () => {
      state.dim = button.dataset.dim;
      for (const b of document.querySelectorAll(".toggle button")) b.classList.toggle("on", b === button);
      if (state.data.spend) renderSpend(state.data.spend);
    });
  }
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      for (const p of PANELS) if (state.data[p]) RENDER[p](state.data[p]);
    }, 150);
  });
  const failed = new URLSearchParams(location.search).get("login") === "failed";
  if (failed) history.replaceState(null, "", location.pathname);
  getJSON("/dashboard/api/session").then(showDashboard, () => showLogin(failed ? "That is not the admin key." : ""));
}

document.addEventListener("DOMContentLoaded", start);
