// The FedLedger dashboard: polls the daemon's /status once a second and redraws.
// Plain DOM and SVG, no library. Everything in /status may come from peers or the chain, so it is
// only ever set as text (textContent), never parsed as HTML.
"use strict";

const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
const WAD = 10n ** 18n;

function $(id) { return document.getElementById(id); }

function setText(el, text) {
  const value = text === null || text === undefined || text === "" ? "–" : String(text);
  if (el.textContent !== value) el.textContent = value;
}

// Wei (a decimal string, exact) as ether with 4 decimals; wad as a number for plots.
function ether(wei) {
  if (wei === null || wei === undefined) return null;
  let v;
  try { v = BigInt(wei); } catch (e) { return null; }
  const neg = v < 0n; if (neg) v = -v;
  const scaled = (v * 10000n + WAD / 2n) / WAD;
  const whole = scaled / 10000n, frac = String(scaled % 10000n).padStart(4, "0");
  return (neg ? "-" : "") + whole + "." + frac + " ETH";
}
function wadNumber(wad) { const n = Number(wad); return Number.isFinite(n) ? n / 1e18 : null; }

function duration(s) {
  if (typeof s !== "number") return null;
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return (h ? h + " h " : "") + (h || m ? m + " min " : "") + sec + " s";
}
function clock(t) {
  return typeof t === "number" ? new Date(t * 1000).toISOString().slice(11, 19) : "";
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = String(text);
  return e;
}

// A line plot of points [{label, y}] with y in [lo, hi]; the `empty` text when there is no point.
function linePlot(target, points, lo, hi, format, empty) {
  const W = 520, H = 220, L = 48, R = 12, T = 10, B = 30;
  const kids = [];
  points = points.filter(p => typeof p.y === "number" && Number.isFinite(p.y));
  if (!points.length) {
    kids.push(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, empty));
    target.replaceChildren(...kids);
    return;
  }
  const x = i => L + (points.length === 1 ? (W - L - R) / 2 : i * (W - L - R) / (points.length - 1));
  const y = v => T + (hi - v) * (H - T - B) / (hi - lo);
  for (let k = 0; k <= 4; k++) {
    const v = lo + (hi - lo) * k / 4;
    kids.push(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: k ? "grid" : "axis" }));
    kids.push(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  const step = Math.max(1, Math.ceil(points.length / 10));
  points.forEach((p, i) => {
    if (i % step === 0 || i === points.length - 1)
      kids.push(svg("text", { x: x(i), y: H - B + 16, "text-anchor": "middle" }, p.label));
  });
  kids.push(svg("polyline", { class: "series", points: points.map((p, i) => x(i) + "," + y(p.y)).join(" ") }));
  points.forEach((p, i) => {
    const c = svg("circle", { cx: x(i), cy: y(p.y), r: 3.5, class: "point" });
    c.appendChild(svg("title", {}, p.label + ": " + format(p.y)));
    kids.push(c);
  });
  target.replaceChildren(...kids);
}

function renderNode(s, d) {
  setText($("node-address"), s.node);
  setText($("peer-id"), s.peer_id);
  setText($("uptime"), duration(s.uptime_s));
  const a = d.account || {};
  setText($("stake"), ether(a.stake_wei));
  const rep = wadNumber(a.reputation_wad);
  setText($("reputation"), rep === null || a.reputation_wad === null ? null : rep.toFixed(4));
  setText($("pending"), ether(a.pending_wei));
  setText($("held"), ether(a.held_wei));
  setText($("paid"), ether(a.paid_wei));
  setText($("earned"), ether(a.earned_wei));
  const peers = d.peers || [];
  setText($("peer-count"), s.peers + " registered, " + peers.filter(p => p.connected).length + " connected");
  $("peers").replaceChildren(...peers.map(p => {
    const li = el("li", p.address + "  " + p.peer_id, p.connected ? "connected" : "");
    li.title = p.connected ? "connected" : "not connected";
    return li;
  }));
  const points = (d.reputation || []).map(p => ({
    label: p.round === null ? "start" : (p.task !== null ? "t" + p.task + " r" + p.round : "#" + p.block),
    y: wadNumber(p.wad),
  }));
  linePlot($("plot-reputation"), points, 0, 1, v => v.toFixed(2), "no reputation read yet");
}

function taskCard(id) {
  let card = document.querySelector('#tasks [data-task="' + CSS.escape(id) + '"]');
  if (!card) {
    card = $("task-template").content.firstElementChild.cloneNode(true);
    card.dataset.task = id;
    card.querySelector(".task-id").textContent = id;
    const cards = [...$("tasks").children];
    const after = cards.find(c => Number(c.dataset.task) > Number(id));
    $("tasks").insertBefore(card, after || null);
  }
  return card;
}

function renderTasks(s, d) {
  const live = s.tasks || {}, past = d.tasks || {}, me = String(s.node || "").toLowerCase();
  const ids = new Set([...Object.keys(live), ...Object.keys(past)]);
  for (const card of [...$("tasks").children]) if (!ids.has(card.dataset.task)) card.remove();
  for (const id of [...ids].sort((a, b) => a - b)) {
    const card = taskCard(id), t = live[id] || {}, h = past[id] || {};
    const q = sel => card.querySelector(sel);
    const rounds = typeof t.rounds === "number" ? t.rounds : null;
    let round = typeof t.round === "number" ? t.round : null;
    if (round !== null && rounds !== null && t.finished) round = Math.min(round, rounds);
    setText(q(".task-phase"), t.finished ? "finished" : t.phase);
    setText(q(".task-round"), round);
    setText(q(".task-rounds"), rounds);
    const committee = h.committee && h.committee.round === t.round ? h.committee.members : [];
    const members = q(".task-committee");
    if (!committee.length) setText(members, t.finished ? "–" : "not drawn yet");
    else members.replaceChildren(...committee.flatMap((m, i) => {
      const span = el("span", m, String(m).toLowerCase() === me ? "me" : "");
      return i ? [el("br"), span] : [span];
    }));
    const done = h.rounds || [];
    linePlot(q(".plot-accuracy"), done.filter(r => !r.voided).map(r => ({ label: "r" + r.round, y: r.accuracy })),
             0, 1, v => (100 * v).toFixed(0) + "%",
             done.length ? "no model of this task held here yet" : "no finished round yet");
    q(".rounds tbody").replaceChildren(...done.slice().reverse().map(r => {
      const tr = el("tr");
      tr.append(el("td", r.round), el("td", r.voided ? "voided (model unchanged)" : r.cid, "mono"),
                el("td", typeof r.accuracy === "number" ? (100 * r.accuracy).toFixed(1) + "%" : "–"),
                el("td", r.reward_wei ? ether(r.reward_wei).replace(" ETH", "") : "–"));
      tr.cells[1].title = r.cid || "";
      return tr;
    }));
  }
  let none = $("tasks").querySelector(".none");
  if (ids.size) { if (none) none.remove(); return; }
  if (!none) { none = el("section", "", "card none"); $("tasks").append(none); }
  none.replaceChildren(el("h2", "Tasks"), el("p", "This node works on no task yet ([tasks] join in node.toml).", "muted"),
    ...Object.entries(s.not_joined || {}).map(([id, why]) => el("p", "task " + id + ": " + why, "muted")));
}

function renderLog(list, entries) {
  const shown = entries.slice(-50).reverse();
  list.replaceChildren(...shown.map(e => {
    const li = el("li", "", e.level || "");
    li.append(el("time", clock(e.t)), document.createTextNode(e.text));
    return li;
  }));
  if (!shown.length) list.replaceChildren(el("li", "nothing yet", "muted"));
}

function render(s) {
  const d = s.dashboard || {};
  renderNode(s, d);
  renderTasks(s, d);
  let actions = d.actions || [];
  if (!actions.length && s.recent_actions)  // the daemon logs above info: its journal still says what it did
    actions = s.recent_actions.map(a => ({ text: "task " + a.task + " round " + a.round + ": " + a.kind + " (" + a.status + ")" }));
  renderLog($("actions"), actions);
  renderLog($("errors"), d.errors || []);
  $("last-error").textContent = s.last_error ? "last error: " + s.last_error : "";
}

async function poll() {
  const status = $("connection");
  try {
    const r = await fetch("/status", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    status.className = "muted";
    setText(status, "live: updated " + new Date().toISOString().slice(11, 19) + " UTC");
  } catch (e) {
    status.className = "muted stale";
    setText(status, "cannot reach the daemon (" + e.message + "); retrying");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", poll);
