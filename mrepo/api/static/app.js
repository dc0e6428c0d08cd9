// mrepo web view: plain JS over the server's /api endpoints (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const token = () => localStorage.getItem("mrepo-token") || "";

function headers() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

async function api(path) {
  const resp = await fetch(path, { headers: headers() });
  if (!resp.ok) {
    let msg = resp.status + "";
    try { const body = await resp.json(); msg += " " + (body.detail || body.error); } catch (e) { /* not JSON */ }
    throw new Error(path + ": " + msg);
  }
  return resp.json();
}

async function imageInto(img, path) {
  const resp = await fetch(path, { headers: headers() });
  if (resp.ok) img.src = URL.createObjectURL(await resp.blob());
  else img.alt = "unavailable (" + resp.status + ")";
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

const short = (h) => (h || "").slice(0, 10);

// ------------------------------------------------------------------ branches
function showBranches(overview) {
  const list = $("branches");
  list.replaceChildren();
  const select = $("branch");
  const current = select.value || overview.default_branch;
  select.replaceChildren();
  for (const [name, hash] of Object.entries(overview.branches)) {
    const tags = [];
    if (name === overview.default_branch) tags.push("default");
    if (overview.protected.includes(name)) tags.push("protected");
    list.append(el("li", {}, el("b", {}, name), " ", el("span", { class: "hash" }, short(hash)),
      tags.length ? " (" + tags.join(", ") + ")" : ""));
    select.append(el("option", { value: name }, name));
  }
  for (const [name, hash] of Object.entries(overview.tags)) {
    list.append(el("li", {}, "tag ", el("b", {}, name), " ", el("span", { class: "hash" }, short(hash))));
  }
  if (!Object.keys(overview.branches).length) list.append(el("li", {}, "no branches yet"));
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

// ------------------------------------------------------------------ commit graph
function layoutGraph(commits) {
  // Lanes: each holds the hash of the commit it expects next (a parent of a drawn commit).
  const lanes = [];
  const pos = new Map();
  commits.forEach((c, row) => {
    let col = lanes.indexOf(c.hash);
    if (col < 0) { col = lanes.indexOf(null); if (col < 0) { col = lanes.length; lanes.push(null); } }
    for (let i = 0; i < lanes.length; i++) if (lanes[i] === c.hash) lanes[i] = null;
    pos.set(c.hash, { row, col });
    c.parents.forEach((p, k) => {
      if (lanes.includes(p)) return;
      if (k === 0) { lanes[col] = p; return; }
      let free = lanes.indexOf(null);
      if (free < 0) { free = lanes.length; lanes.push(null); }
      lanes[free] = p;
    });
  });
  return pos;
}

function showGraph(data) {
  const box = $("graph");
  box.replaceChildren();
  const commits = data.commits;
  if (!commits.length) { box.append("no commits"); return; }
  const pos = layoutGraph(commits);
  const dx = 16, dy = 24, x0 = 12, y0 = 14;
  const width = Math.max(...[...pos.values()].map((p) => p.col)) * dx + 2 * x0;
  const palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"];
  const canvas = svg("svg", { width: width + 900, height: commits.length * dy + 8, id: "graph-svg" });
  const at = (p) => [x0 + p.col * dx, y0 + p.row * dy];
  for (const c of commits) {
    const [x, y] = at(pos.get(c.hash));
    for (const p of c.parents) {
      if (!pos.has(p)) continue;
      const [px, py] = at(pos.get(p));
      const d = px === x ? `M${x},${y} L${px},${py}` : `M${x},${y} C${x},${y + dy * 0.8} ${px},${py - dy * 0.8} ${px},${py}`;
      canvas.append(svg("path", { d, stroke: palette[pos.get(p).col % palette.length], fill: "none", "stroke-width": 2 }));
    }
  }
  for (const c of commits) {
    const p = pos.get(c.hash);
    const [x, y] = at(p);
    canvas.append(svg("circle", { cx: x, cy: y, r: 5, fill: palette[p.col % palette.length], class: "commit" }));
    const text = svg("text", { x: width + 4, y: y + 4, "font-size": 12 });
    text.textContent = `${short(c.hash)}  ${c.refs.length ? "[" + c.refs.join(", ") + "] " : ""}${c.message}  — ${c.author}, ${c.time}` +
      (c.operation ? `  (${c.operation})` : "");
    canvas.append(text);
  }
  box.append(canvas);
  if (data.truncated) box.append(el("div", {}, "older commits not shown"));
}

// ------------------------------------------------------------------ species
function fscPlot(fsc) {
  const w = 340, h = 150, m = 28;
  const plot = svg("svg", { width: w, height: h, class: "fsc" });
  if (!fsc || fsc.error) {
    const t = svg("text", { x: 10, y: h / 2, "font-size": 12 });
    t.textContent = fsc ? fsc.error : "no FSC curve";
    plot.append(t);
    return plot;
  }
  const fmax = Math.max(...fsc.frequency, 1e-9);
  const X = (f) => m + (f / fmax) * (w - m - 8);
  const Y = (v) => 8 + (1 - Math.max(-0.1, Math.min(1, v))) / 1.1 * (h - m - 8);
  plot.append(svg("line", { x1: m, y1: Y(0), x2: w - 8, y2: Y(0), stroke: "#999" }));
  plot.append(svg("line", { x1: m, y1: Y(0.143), x2: w - 8, y2: Y(0.143), stroke: "#e88", "stroke-dasharray": "4 3" }));
  plot.append(svg("line", { x1: m, y1: 8, x2: m, y2: h - m, stroke: "#999" }));
  const pts = fsc.frequency.map((f, i) => `${X(f).toFixed(1)},${Y(fsc.fsc[i]).toFixed(1)}`).join(" ");
  plot.append(svg("polyline", { points: pts, fill: "none", stroke: "#1f3a5f", "stroke-width": 2, class: "fsc-curve" }));
  const label = svg("text", { x: m, y: h - 8, "font-size": 11 });
  label.textContent = `FSC, 0 … ${fmax.toFixed(3)} 1/Å (dashed 0.143)`;
  plot.append(label);
  return plot;
}

async function showSpecies(pop) {
  const box = $("species");
  box.replaceChildren();
  if (!pop.species.length) { box.append("no species"); return; }
  for (const s of pop.species) {
    const card = el("div", { class: "card species" });
    const meta = el("div", { class: "meta" }, el("b", {}, s.name), el("br"),
      `${s.particles} particles, box ${s.box}, ${s.pixel_size} Å/px, ${s.symmetry}`, el("br"),
      `diameter ${s.diameter} Å, resolution ${s.resolution == null ? "–" : s.resolution.toFixed(2) + " Å"}`, el("br"),
      el("span", { class: "hash" }, short(s.hash)));
    card.append(meta);
    for (const [label, h] of [["half-map 1", s.half1], ["half-map 2", s.half2]]) {
      const img = el("img", { alt: label + " central slice" });
      card.append(el("figure", {}, img, el("figcaption", {}, label + ", central z slice")));
      imageInto(img, `/api/arrays/${h}/slice.png?axis=0`);
    }
    const fscBox = el("div", {});
    card.append(fscBox);
    box.append(card);
    api(`/api/species/${s.hash}`).then((d) => fscBox.append(fscPlot(d.fsc)))
      .catch((e) => fscBox.append(el("span", { class: "error" }, e.message)));
  }
}

// ------------------------------------------------------------------ sources
async function showSources(pop) {
  const box = $("sources");
  box.replaceChildren();
  if (!pop.sources.length) { box.append("no data sources"); return; }
  for (const s of pop.sources) {
    const details = el("details", { open: "" }, el("summary", {}, el("b", {}, s.name), ` — ${s.items} item(s) `,
      el("span", { class: "hash" }, short(s.hash))));
    box.append(details);
    const d = await api(`/api/sources/${s.hash}?limit=50`);
    const table = el("table", {}, el("tr", {}, el("th", {}, "item"), el("th", {}, "kind"), el("th", {}, "raw data"),
      el("th", {}, "models")));
    for (const it of d.items) {
      table.append(el("tr", {}, el("td", {}, it.name), el("td", {}, it.kind),
        el("td", { class: "hash" }, short(it.raw)), el("td", {}, it.models.join(", "))));
    }
    details.append(table);
    if (d.total > d.items.length) details.append(el("div", {}, `${d.total - d.items.length} more not shown`));
  }
}

// ------------------------------------------------------------------ pull requests
async function showPulls() {
  const box = $("pulls");
  box.replaceChildren();
  const data = await api("/api/pulls");
  if (!data.pulls.length) { box.append("no pull requests"); return; }
  for (const p of data.pulls) {
    const counts = p.counts ? Object.entries(p.counts).map(([k, v]) => `${v} ${k.replace("_", " ")}`).join(", ") : "not checked";
    const details = el("details", {}, el("summary", {}, `#${p.number} `, el("b", {}, p.title || p.kind || ""), " ",
      el("span", { class: "state-" + p.state }, p.state || ""), ` ${p.from || ""} → ${p.into || ""}: ${counts}`));
    details.addEventListener("toggle", async () => {
      if (!details.open || details.dataset.loaded) return;
      details.dataset.loaded = "1";
      const full = await api(`/api/pulls/${p.number}`);
      const r = full.report;
      if (!r) { details.append(el("div", {}, "no collision report yet")); return; }
      const table = el("table", {}, el("tr", {}, el("th", {}, "item"), el("th", {}, "incoming"), el("th", {}, "id"),
        el("th", {}, "existing"), el("th", {}, "id"), el("th", {}, "distance Å"), el("th", {}, "threshold Å")));
      for (const c of (r.collisions || []).slice(0, 100)) {
        table.append(el("tr", {}, el("td", { class: "hash" }, short(c.item)), el("td", {}, c.incoming),
          el("td", {}, c.incoming_id), el("td", {}, c.existing), el("td", {}, c.existing_id),
          el("td", {}, c.distance.toFixed(1)), el("td", {}, c.threshold.toFixed(1))));
      }
      details.append(el("div", {}, `incoming: ${(r.incoming || []).join(", ")}; existing: ${(r.existing || []).join(", ")}`), table);
    });
    box.append(details);
  }
}

// ------------------------------------------------------------------ main
async function load() {
  const status = $("status");
  status.textContent = "loading…";
  try {
    const overview = await api("/api/overview");
    showBranches(overview);
    showGraph(await api("/api/graph?limit=200"));
    const branch = $("branch").value;
    if (branch) {
      const pop = await api(`/api/population?rev=${encodeURIComponent(branch)}`);
      await Promise.all([showSpecies(pop), showSources(pop)]);
    }
    await showPulls();
    status.textContent = "";
  } catch (e) {
    status.textContent = e.message;
    status.className = "error";
  }
}

$("token").value = token();
$("token").addEventListener("change", (e) => { localStorage.setItem("mrepo-token", e.target.value); load(); });
$("branch").addEventListener("change", load);
load();
