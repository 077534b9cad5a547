// usher up's dashboard: polls /_usher/api/state once a second and redraws in place (rows are
// kept per shop, so a button is never replaced under the pointer). No framework, no build step.
"use strict";

const COLORS = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795",
  "#b7791f", "#e53e3e", "#4a5568", "#00a3c4", "#718096", "#9f7aea"];
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function color(id) {
  const n = parseInt(id.replace(/^shop-/, ""), 10);
  return COLORS[(Number.isNaN(n) ? id.length : n) % COLORS.length];
}

function say(text, isError) {
  const m = $("message");
  m.textContent = text;
  m.className = isError ? "error" : "";
}

async function post(path, what) {
  say(what + "…", false);
  try {
    const res = await fetch(path, { method: "POST" });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      say(what + " failed: " + (body.error || res.status), true);
    } else {
      say(what + ": done", false);
    }
  } catch (e) {
    say(what + " failed: " + e, true);
  }
  refresh();
}

function cell(tr, cls, numeric) {
  const td = document.createElement("td");
  td.className = cls + (numeric ? " num" : "");
  tr.appendChild(td);
  return td;
}

function button(label, action, id) {
  const b = document.createElement("button");
  b.textContent = label + " " + id;
  b.dataset.action = action;
  b.dataset.shop = id;
  return b;
}

function makeRow(id) {
  const tr = document.createElement("tr");
  tr.dataset.shop = id;
  const name = cell(tr, "id");
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = color(id);
  name.append(swatch, id);
  cell(tr, "addr");
  const st = cell(tr, "state-cell");
  const badge = document.createElement("span");
  badge.className = "state";
  const lb = document.createElement("span");
  lb.className = "lb-state";
  st.append(badge, lb);
  cell(tr, "rps", true);
  cell(tr, "pinned", true);
  cell(tr, "inflight", true);
  cell(tr, "requests", true);
  const actions = cell(tr, "actions");
  const kill = button("kill", "kill", id);
  kill.classList.add("danger");
  kill.title = "kill -9: the process dies at once, the balancer is not told";
  kill.onclick = () => post("/_usher/api/shops/" + encodeURIComponent(id) + "/kill", "kill " + id);
  const drain = button("drain", "drain", id);
  drain.title = "no new clients; pinned ones may stay until the drain deadline, then it stops";
  drain.onclick = () => post("/_usher/api/shops/" + encodeURIComponent(id) + "/drain", "drain " + id);
  actions.append(kill, " ", drain);
  return tr;
}

function updateShops(shops) {
  const body = $("shops");
  const seen = new Set();
  shops.forEach((s, i) => {
    seen.add(s.id);
    let tr = body.querySelector('tr[data-shop="' + CSS.escape(s.id) + '"]');
    if (!tr) tr = makeRow(s.id);
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
    tr.querySelector(".addr").textContent = s.addr;
    const badge = tr.querySelector(".state");
    badge.textContent = s.state;
    badge.className = "state state-" + s.state;
    tr.querySelector(".lb-state").textContent =
      s.lb_state ? "balancer: " + s.lb_state : "out of the balancer";
    tr.querySelector(".rps").textContent = s.rps.toFixed(1);
    tr.querySelector(".pinned").textContent = s.pinned_clients;
    tr.querySelector(".inflight").textContent = s.inflight;
    tr.querySelector(".requests").textContent = s.requests;
    const running = s.process === "running";
    tr.querySelector('[data-action="kill"]').disabled = !running;
    tr.querySelector('[data-action="drain"]').disabled = !running || s.state !== "active";
  });
  [...body.children].forEach((tr) => { if (!seen.has(tr.dataset.shop)) tr.remove(); });
}

function drawChart(shops, windowS) {
  const svg = $("chart");
  const W = 720, H = 220, L = 40, R = 10, T = 10, B = 24;
  let max = 1;
  shops.forEach((s) => s.history.forEach((v) => { if (v > max) max = v; }));
  max = niceCeil(max);
  const x = (i) => L + (W - L - R) * (i / (windowS - 1));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const parts = [];
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    parts.push(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e2e6ee" }));
    parts.push(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
  }
  [["-60 s", 0], ["-30 s", (windowS - 1) / 2], ["now", windowS - 1]].forEach(([t, i]) => {
    parts.push(el("text", { x: x(i), y: H - 6, "text-anchor": "middle" }, t));
  });
  shops.forEach((s) => {
    if (s.history.length === 0) return;
    const offset = windowS - s.history.length;
    const pts = s.history.map((v, i) => x(offset + i).toFixed(1) + "," + y(v).toFixed(1));
    if (pts.length === 1) pts.push(pts[0]);
    parts.push(el("polyline", {
      points: pts.join(" "), fill: "none", stroke: color(s.id), "stroke-width": 2,
      "data-shop": s.id,
      "stroke-dasharray": s.process === "running" ? "" : "4 3",
    }));
  });
  svg.replaceChildren(...parts);
  const legend = $("legend");
  legend.replaceChildren(...shops.map((s) => {
    const span = document.createElement("span");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = color(s.id);
    span.append(sw, s.id + " " + s.rps.toFixed(1) + "/s");
    return span;
  }));
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmt(v) { return v >= 10 ? v.toFixed(0) : v.toFixed(1); }

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) if (v !== "") e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function updateStore(store) {
  $("store-kind").textContent = store.kind;
  $("store-used").textContent = store.used
    ? "this architecture keeps its sessions there;"
    : "this architecture does not use it (sessions are in memory);";
  $("store-restarts").textContent = store.restarts;
  const b = $("restart-store");
  b.disabled = !store.restartable;
  $("store-reason").textContent = store.restartable
    ? "stops the store server and starts it again: nothing is persisted, so its sessions are lost"
    : "disabled: " + store.reason;
}

let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const res = await fetch("/_usher/api/state", { cache: "no-store" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    const s = await res.json();
    $("arch").textContent = s.architecture;
    $("policy").textContent = s.policy;
    $("affinity").textContent = s.affinity;
    $("sessions").textContent = s.sessions;
    const link = $("shop-link");
    link.href = s.shop_url;
    link.textContent = s.shop_url;
    $("total").textContent = "— " + s.total_rps.toFixed(1) + " requests/s in all";
    updateShops(s.shops);
    drawChart(s.shops, s.window_s);
    updateStore(s.store);
    $("connection").textContent = "live";
    $("connection").className = "";
  } catch (e) {
    $("connection").textContent = "connection lost (" + e.message + ")";
    $("connection").className = "lost";
  } finally {
    busy = false;
  }
}

$("add-shop").onclick = () => post("/_usher/api/shops", "add shop");
$("restart-store").onclick = () => post("/_usher/api/store/restart", "restart store");
refresh();
setInterval(refresh, 1000);
