"""The monitoring dashboard a policy server serves at ``GET /dashboard``: live plots of its own
Prometheus metrics and of the A/B experiment, drawn in the browser.

The page carries no data, so it is served without the token. Its script reads the token from the
URL fragment (``/dashboard#token=TOKEN``; a fragment never reaches a server or its logs), polls
``GET /metrics`` every ``every`` ms (``#token=...&every=500``), parses the text exposition and
keeps the history in the page: the panels are computed from the same series Prometheus scrapes,
so what the page shows is what an alert rule would see. Latency quantiles come from the
histogram's bucket counts added since the previous poll, interpolated linearly inside a bucket
(Prometheus's ``histogram_quantile``).
"""

from __future__ import annotations

from vlaforge.webpage import page

_BODY = """
<p id="status">waiting for the first poll</p>
<table id="now"><tr><th>series</th><th>now</th></tr></table>
<div id="charts"></div>
<script>
"use strict";
const args = new URLSearchParams(location.hash.slice(1));
const token = args.get("token"), every = Math.max(100, Number(args.get("every") || 1000));
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"];
const history = [];  // one entry per poll: {t, m: series -> value}
const t0 = Date.now();

function parse(text) {  // the text exposition: "name{labels} value" per line, '#' lines are comments
  const m = new Map();
  for (const line of text.split("\\n")) {
    if (!line || line[0] === "#") continue;
    const cut = line.lastIndexOf(" ");
    m.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return m;
}
function matching(m, name) {  // [labels string, value] of every sample of one series name
  const out = [];
  for (const [k, v] of m) if (k === name || k.startsWith(name + "{")) out.push([k.slice(name.length), v]);
  return out;
}
function label(labels, key) {
  const hit = new RegExp(key + '="([^"]*)"').exec(labels);
  return hit ? hit[1] : "";
}
function total(m, name, keep) {
  return matching(m, name).filter(([l]) => !keep || keep(l)).reduce((s, [, v]) => s + v, 0);
}
function quantile(q, prev, now, name) {  // histogram_quantile over the buckets added since prev
  const bucket = b => matching(b, name + "_bucket").map(([l, v]) => [Number(label(l, "le")), v])
                                                    .sort((a, c) => a[0] - c[0]);
  const cur = bucket(now), old = prev ? bucket(prev) : cur.map(([le]) => [le, 0]);
  const counts = cur.map(([le, v], i) => [le, v - (old[i] ? old[i][1] : 0)]);
  const n = counts.length ? counts[counts.length - 1][1] : 0;
  if (!n) return null;
  let lo = 0, below = 0;
  for (const [le, c] of counts) {
    if (c >= q * n) return le === Infinity ? lo : lo + (le - lo) * (q * n - below) / Math.max(c - below, 1e-12);
    lo = le; below = c;
  }
  return lo;
}
function chart(title, series, opt = {}) {  // an SVG line chart; series: [{name, points: [[t, y]]}]
  const W = 420, H = 190, L = 52, B = 24, pts = series.flatMap(s => s.points).filter(p => p[1] !== null);
  const box = document.createElement("figure");
  box.style.width = W + "px";
  const f = opt.log ? (y => Math.log10(Math.max(y, 1e-300))) : (y => y);
  const ys = pts.map(p => f(p[1])).concat(opt.lines ? opt.lines.map(l => f(l.y)) : []);
  let y0 = opt.min !== undefined ? f(opt.min) : Math.min(...ys, 0), y1 = Math.max(...ys, y0);
  if (opt.max !== undefined) y1 = Math.max(f(opt.max), y1);
  if (y1 - y0 < 1e-9) y1 = y0 + 1;  // a flat series: an axis of one unit
  const x1 = Math.max(...pts.map(p => p[0]), 1);
  const X = t => L + (W - L - 8) * t / x1, Y = y => H - B - (H - B - 8) * (f(y) - y0) / (y1 - y0);
  let svg = `<svg width="${W}" height="${H}" xmlns="http://www.w3.org/2000/svg">` +
    `<rect x="${L}" y="8" width="${W - L - 8}" height="${H - B - 8}" fill="#fafafa" stroke="#999"/>` +
    `<text x="${L - 4}" y="14" font-size="10" text-anchor="end">${opt.log ? "1e" + y1.toFixed(0) : y1.toPrecision(3)}</text>` +
    `<text x="${L - 4}" y="${H - B}" font-size="10" text-anchor="end">${opt.log ? "1e" + y0.toFixed(0) : y0.toPrecision(3)}</text>` +
    `<text x="${W - 8}" y="${H - B + 12}" font-size="10" text-anchor="end">${x1.toFixed(0)} s</text>`;
  for (const l of opt.lines || [])
    svg += `<line x1="${L}" x2="${W - 8}" y1="${Y(l.y)}" y2="${Y(l.y)}" stroke="#000" stroke-dasharray="4 3"/>` +
           `<text x="${L + 4}" y="${Y(l.y) - 3}" font-size="10">${l.name}</text>`;
  let legend = L + 6;
  series.forEach((s, i) => {
    const p = s.points.filter(q => q[1] !== null).map(q => `${X(q[0]).toFixed(1)},${Y(q[1]).toFixed(1)}`);
    svg += `<polyline fill="none" stroke-width="2" stroke="${COLORS[i % COLORS.length]}" points="${p.join(" ")}"/>` +
           `<text x="${legend}" y="${H - 6}" font-size="11" fill="${COLORS[i % COLORS.length]}">${s.name}</text>`;
    legend += 7 * s.name.length + 12;
  });
  box.innerHTML = svg + "</svg><figcaption>" + title + "</figcaption>";
  return box;
}
function row(id, name, value) {
  let cell = document.getElementById(id);
  if (!cell) {
    const tr = document.getElementById("now").insertRow();
    tr.insertCell().textContent = name;
    cell = tr.insertCell();
    cell.id = id;
  }
  cell.textContent = value;
}
function draw() {
  const now = history[history.length - 1].m, ok = l => l.includes('code="200"');
  row("requests", "act requests served", total(now, "vlaforge_requests_total", ok));
  row("errors", "act requests refused (4xx/5xx)", total(now, "vlaforge_requests_total", l => !ok(l)));
  row("deadline-misses", "deadline misses", total(now, "vlaforge_deadline_misses_total"));
  row("interventions", "safety interventions", total(now, "vlaforge_safety_interventions_total"));
  row("estops", "emergency stops", total(now, "vlaforge_emergency_stops_total"));
  row("ood-alarms", "out-of-distribution alarms", total(now, "vlaforge_ood_alarms_total"));
  row("drift-checks", "drift tests run / rejected",
      total(now, "vlaforge_drift_checks_total") + " / " + total(now, "vlaforge_drift_alarms_total"));
  row("drift-alarm", "drift alarm", total(now, "vlaforge_drift_alarm") ? "RAISED" : "quiet");
  const arms = matching(now, "vlaforge_ab_episodes").map(([l]) => label(l, "arm"));
  const get = (name, arm) => total(now, name, l => label(l, "arm") === arm);
  for (const arm of arms)
    row("ab-" + arm, "A/B " + arm + ": successes / episodes",
        get("vlaforge_ab_successes", arm) + " / " + get("vlaforge_ab_episodes", arm));
  if (arms.length) {
    const d = total(now, "vlaforge_ab_decision");
    row("ab-decision", "A/B decision", d > 0 ? "challenger promoted" : d < 0 ? "rolled back to the champion" : "running");
  }
  const pts = (fn) => history.map((h, i) => [(h.t - t0) / 1000, fn(h.m, i ? history[i - 1].m : null, h, i)]);
  const dt = (h, i) => i ? (h.t - history[i - 1].t) / 1000 : null;
  const charts = [
    chart("act requests per second", [{name: "served", points: pts((m, p, h, i) =>
      p ? (total(m, "vlaforge_requests_total", ok) - total(p, "vlaforge_requests_total", ok)) / dt(h, i) : null)}]),
    chart("inference latency since the previous poll (ms)", [0.5, 0.99].map(q => ({name: "p" + 100 * q,
      points: pts((m, p) => { const v = quantile(q, p, m, "vlaforge_inference_seconds"); return v === null ? null : 1000 * v; })}))),
    chart("drift test p-value", [{name: "p", points: pts(m => total(m, "vlaforge_drift_p_value"))}],
      {min: 0, max: 1, lines: matching(now, "vlaforge_drift_alpha").map(([, v]) => ({name: "alpha", y: v}))}),
    chart("first action, mean over the last 100 acts", matching(now, "vlaforge_action_mean").map(([l]) =>
      ({name: "dim " + label(l, "dim"), points: pts(m => total(m, "vlaforge_action_mean", k => k === l))}))),
  ];
  if (arms.length) {
    charts.push(chart("A/B success rate per arm", arms.map(arm => ({name: arm, points: pts(m => {
      const n = total(m, "vlaforge_ab_episodes", l => label(l, "arm") === arm);
      return n ? total(m, "vlaforge_ab_successes", l => label(l, "arm") === arm) / n : null; })})), {min: 0, max: 1}));
    charts.push(chart("A/B e-values (log scale)", ["challenger_better", "challenger_worse"].map(c => ({name: c,
      points: pts(m => total(m, "vlaforge_ab_e_value", l => label(l, "claim") === c))})),
      {log: true, min: 0.01, lines: [{name: "decides", y: total(now, "vlaforge_ab_threshold")}]}));
  }
  document.getElementById("charts").replaceChildren(...charts);
}
async function poll() {
  try {
    const r = await fetch("/metrics", {headers: {Authorization: "Bearer " + token}});
    if (!r.ok) throw new Error("GET /metrics answered " + r.status);
    history.push({t: Date.now(), m: parse(await r.text())});
    if (history.length > 600) history.shift();
    document.getElementById("status").textContent = "polls: " + history.length + ", every " + every + " ms";
    draw();
  } catch (e) {
    document.getElementById("status").textContent = "error: " + e.message;
  }
  setTimeout(poll, every);
}
if (token) poll();
else document.getElementById("status").textContent = "open this page as /dashboard#token=TOKEN (the server's token)";
</script>
"""


def dashboard_html() -> str:
    """The dashboard page (static: the data arrives through the page's own polls)."""
    return page("vlaforge policy monitor", _BODY)
