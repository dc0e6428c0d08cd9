// mrepo web view: plain JS over the server's /api endpoints (no build step).
// State lives in the URL hash: #rev=<branch or commit>. Clicking a commit shows its population
// and the diff to its first parent.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "mrepo-token";
const token = () => localStorage.getItem(TOKEN_KEY) || "";
const state = { rev: null, commit: null, overview: null };
let pending = 0;

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function headers() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

async function api(path) {
  const resp = await fetch(path, { headers: headers() });
  if (!resp.ok) {
    let msg = resp.status + "";
    try { const body = await resp.json(); msg += " " + (body.detail || body.error); } catch (e) { /* not JSON */ }
    throw new HttpError(resp.status, path + ": " + msg);
  }
  return resp.json();
}

function markReady() {
  // Page coordinates of the images (for tests and tools that read the DOM), then "ready".
  for (const img of document.querySelectorAll("img")) {
    const r = img.getBoundingClientRect();
    img.dataset.rect = [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height].map(Math.round).join(",");
  }
  document.body.dataset.scrollWidth = document.documentElement.scrollWidth;
  document.body.dataset.ready = "1";
}

function track(promise) {
  pending++;
  document.body.dataset.ready = "0";
  return promise.finally(() => { if (--pending === 0) markReady(); });
}

function imageInto(img, path) {
  return track((async () => {
    const resp = await fetch(path, { headers: headers() });
    if (!resp.ok) { img.alt = "unavailable (" + resp.status + ")"; img.dataset.failed = resp.status; return; }
    img.src = URL.createObjectURL(await resp.blob());
    await img.decode().catch(() => null);
    img.dataset.loaded = img.naturalWidth + "x" + img.naturalHeight;
  })());
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

const short = (h) => (h || "").slice(0, 10);
const fmt = (v, d) => (v == null ? "–" : Number(v).toFixed(d));

function selectRev(rev) {
  location.hash = "rev=" + encodeURIComponent(rev);
}

// ------------------------------------------------------------------ sign in
function showLogin(reason) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-reason").textContent = reason;
  $("token").value = "";
  $("token").focus();
  markReady();
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem(TOKEN_KEY, $("token").value.trim());
  load();
});
$("logout").addEventListener("click", () => { localStorage.removeItem(TOKEN_KEY); load(); });

// ------------------------------------------------------------------ branches
function showBranches(overview) {
  const list = $("branches");
  list.replaceChildren();
  const select = $("branch");
  select.replaceChildren();
  for (const [name, hash] of Object.entries(overview.branches)) {
    const tags = [];
    if (name === overview.default_branch) tags.push("default");
    if (overview.protected.includes(name)) tags.push("protected");
    list.append(el("li", {}, el("a", { href: "#rev=" + encodeURIComponent(name) }, el("b", {}, name)), " ",
      el("span", { class: "hash" }, short(hash)), tags.length ? " (" + tags.join(", ") + ")" : ""));
    select.append(el("option", { value: name }, name));
  }
  for (const [name, hash] of Object.entries(overview.tags)) {
    list.append(el("li", {}, "tag ", el("a", { href: "#rev=" + encodeURIComponent(name) }, el("b", {}, name)), " ",
      el("span", { class: "hash" }, short(hash))));
  }
  if (!Object.keys(overview.branches).length) list.append(el("li", {}, "no branches yet"));
  if (overview.branches[state.rev] !== undefined) select.value = state.rev;
  else if (state.rev) {  // a tag or a commit: the selector names no branch (it showed the first one)
    select.prepend(el("option", { value: "", disabled: "", selected: "", class: "no-branch" }, "—"));
    select.value = "";
  } else select.value = overview.default_branch;
}

// ------------------------------------------------------------------ commit graph
function layoutGraph(commits) {
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
  const canvas = svg("svg", { width: width + 760, height: commits.length * dy + 8, id: "graph-svg" });
  const at = (p) => [x0 + p.col * dx, y0 + p.row * dy];
  for (const c of commits) {
    const [x, y] = at(pos.get(c.hash));
    const row = svg("g", { class: "commit-row" + (c.hash === state.commit ? " selected" : ""), "data-commit": c.hash });
    row.append(svg("rect", { x: 0, y: y - dy / 2, width: width + 760, height: dy, fill: "transparent" }));
    const title = svg("title", {}, "show commit " + short(c.hash));
    row.append(title);
    const label = `${short(c.hash)}  ${c.refs.length ? "[" + c.refs.join(", ") + "] " : ""}${c.message}  — ${c.author}, ${c.time}` +
      (c.operation ? `  (${c.operation})` : "");
    row.append(svg("text", { x: width + 4, y: y + 4, "font-size": 12 }, label));
    row.addEventListener("click", () => selectRev(c.hash));
    canvas.append(row);
  }
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
    const dot = svg("circle", { cx: x, cy: y, r: c.hash === state.commit ? 7 : 5, fill: palette[p.col % palette.length],
      class: "commit" });
    dot.addEventListener("click", () => selectRev(c.hash));
    canvas.append(dot);
  }
  box.append(canvas);
  if (data.truncated) box.append(el("div", {}, "older commits not shown"));
}

// ------------------------------------------------------------------ commit detail and diff
function showCommit(d) {
  const box = $("commit");
  box.replaceChildren();
  box.append(el("div", {}, el("span", { class: "hash" }, d.hash)),
    el("div", {}, el("b", {}, d.message)),
    el("div", { class: "hint" }, `${d.author}, ${d.time}, operation ${(d.operation || {}).name || "–"}`),
    el("div", {}, `population “${d.population.name}”: ${d.population.species.length} species (${d.population.species.join(", ") || "none"}), ` +
      `${d.population.sources.length} source(s)`));
  if (d.parents.length) {
    box.append(el("div", {}, "parents: ", ...d.parents.flatMap((p) => [el("a", { href: "#rev=" + p, class: "hash" }, short(p)), " "])));
  }
  const diff = d.diff;
  if (!diff) { box.append(el("div", { class: "hint" }, "first commit: no parent to compare with")); return; }
  box.append(el("h3", {}, "Changes from ", el("span", { class: "hash" }, short(diff.parent))));
  const list = el("ul", { class: "diff" });
  const add = (cls, text) => list.append(el("li", { class: cls }, text));
  for (const s of diff.species_added) add("added", `species added: ${s}`);
  for (const s of diff.species_removed) add("removed", `species removed: ${s}`);
  for (const s of diff.species_changed) add("changed", `species changed: ${s}`);
  for (const s of diff.sources_added) add("added", `source added: ${s}`);
  for (const s of diff.sources_removed) add("removed", `source removed: ${s}`);
  const items = (k, cls, verb) => {
    if (diff[k].length) add(cls, `${diff[k].length} item(s) ${verb}: ` + diff[k].slice(0, 8).map((i) => i.name).join(", ") +
      (diff[k].length > 8 ? " …" : ""));
  };
  items("items_added", "added", "added"); items("items_removed", "removed", "removed"); items("items_changed", "changed", "refined");
  for (const [name, p] of Object.entries(diff.particles || {})) {
    add("changed", `particles of ${name}: +${p.added} −${p.removed} (${p.kept} kept)`);
  }
  if (!list.children.length) add("", "no differences");
  box.append(list);
}

// ------------------------------------------------------------------ plots
function niceTicks(lo, hi, n) {
  const span = hi - lo || 1;
  const step = Math.pow(10, Math.floor(Math.log10(span / n)));
  const mult = [1, 2, 5, 10].find((m) => span / (m * step) <= n) || 10;
  const s = mult * step, out = [];
  for (let v = Math.ceil(lo / s) * s; v <= hi + 1e-9; v += s) out.push(+v.toFixed(10));
  return out;
}

function fscPlot(curves, resolution) {
  const w = 380, h = 210, ml = 38, mr = 10, mt = 10, mb = 38;
  const plot = svg("svg", { width: w, height: h, class: "fsc", role: "img", "aria-label": "FSC plot" });
  if (!curves.length || curves.every((c) => c.error)) {
    plot.append(svg("text", { x: 10, y: h / 2, "font-size": 12 }, curves.length ? curves[0].error : "no FSC curve stored"));
    return plot;
  }
  const fmax = Math.max(...curves.flatMap((c) => c.frequency || []), 1e-9);
  const X = (f) => ml + (f / fmax) * (w - ml - mr);
  const Y = (v) => mt + (1 - Math.max(-0.1, Math.min(1, v))) / 1.1 * (h - mt - mb);
  plot.append(svg("rect", { x: ml, y: mt, width: w - ml - mr, height: h - mt - mb, fill: "#fbfcfd", stroke: "#ccc" }));
  for (const v of [0, 0.5, 1]) {
    plot.append(svg("text", { x: ml - 4, y: Y(v) + 4, "font-size": 10, "text-anchor": "end" }, v.toFixed(1)));
  }
  plot.append(svg("line", { x1: ml, y1: Y(0), x2: w - mr, y2: Y(0), stroke: "#999" }));
  for (const [v, color] of [[0.143, "#d62728"], [0.5, "#ff7f0e"]]) {
    plot.append(svg("line", { x1: ml, y1: Y(v), x2: w - mr, y2: Y(v), stroke: color, "stroke-dasharray": "4 3", class: "threshold" }));
    plot.append(svg("text", { x: w - mr - 2, y: Y(v) - 3, "font-size": 10, "text-anchor": "end", fill: color }, v === 0.5 ? "0.5" : "0.143"));
  }
  // x ticks: resolution in Å at round values
  const cands = [100, 50, 30, 20, 15, 12, 10, 8, 7, 6, 5, 4.5, 4, 3.5, 3, 2.5, 2.2, 2, 1.8, 1.6, 1.5, 1.2, 1];
  let lastX = -1e9;
  for (const a of cands) {
    const f = 1 / a;
    if (f > fmax * 1.0001) break;
    const x = X(f);
    if (x - lastX < 34) continue;
    lastX = x;
    plot.append(svg("line", { x1: x, y1: h - mb, x2: x, y2: h - mb + 4, stroke: "#666" }));
    plot.append(svg("text", { x, y: h - mb + 15, "font-size": 10, "text-anchor": "middle", class: "tick" }, a + ""));
  }
  plot.append(svg("text", { x: (ml + w - mr) / 2, y: h - 6, "font-size": 11, "text-anchor": "middle" }, "resolution (Å)"));
  const colors = ["#1f3a5f", "#2ca02c", "#9467bd", "#8c564b"];
  curves.forEach((c, i) => {
    if (c.error) return;
    // shells from 1 on: shell 0 is the single DC coefficient, whose FSC is only the sign of the two half-maps'
    // means (±1; an unmasked curve started at -1); resolution_at ignores it too
    const pts = c.frequency.map((f, k) => [f, c.fsc[k]]).filter(([f]) => f > 0)
      .map(([f, v]) => `${X(f).toFixed(1)},${Y(v).toFixed(1)}`).join(" ");
    plot.append(svg("polyline", { points: pts, fill: "none", stroke: colors[i % colors.length], "stroke-width": 2,
      class: "fsc-curve", "data-name": c.name }));
    plot.append(svg("text", { x: ml + 6, y: mt + 14 + 13 * i, "font-size": 10, fill: colors[i % colors.length] }, c.name));
  });
  if (resolution) {
    const x = X(1 / resolution);
    plot.append(svg("line", { x1: x, y1: mt, x2: x, y2: h - mb, stroke: "#d62728", class: "resolution-mark" }));
    plot.append(svg("text", { x: Math.min(x + 3, w - 60), y: mt + 12, "font-size": 11, fill: "#d62728", class: "resolution-label" },
      resolution.toFixed(2) + " Å"));
  }
  return plot;
}

function historyPlot(points, name) {
  const w = 300, h = 210, ml = 40, mr = 10, mt = 12, mb = 38;
  const plot = svg("svg", { width: w, height: h, class: "history", role: "img", "aria-label": "resolution per iteration" });
  const pts = points.filter((p) => p.resolution != null);
  if (!pts.length) {
    plot.append(svg("text", { x: 10, y: h / 2, "font-size": 12 }, "no resolution recorded yet"));
    return plot;
  }
  const rs = pts.map((p) => p.resolution);
  let lo = Math.min(...rs), hi = Math.max(...rs);
  if (hi - lo < 0.2) { lo -= 0.5; hi += 0.5; }
  const X = (i) => ml + (pts.length === 1 ? 0.5 : i / (pts.length - 1)) * (w - ml - mr);
  const Y = (r) => mt + (r - lo) / (hi - lo) * (h - mt - mb); // better (smaller Å) at the top
  plot.append(svg("rect", { x: ml, y: mt, width: w - ml - mr, height: h - mt - mb, fill: "#fbfcfd", stroke: "#ccc" }));
  for (const t of niceTicks(lo, hi, 4)) {
    plot.append(svg("text", { x: ml - 4, y: Y(t) + 4, "font-size": 10, "text-anchor": "end" }, t.toFixed(1)));
  }
  plot.append(svg("text", { x: 10, y: mt + (h - mt - mb) / 2, "font-size": 11, transform: `rotate(-90 10 ${mt + (h - mt - mb) / 2})`,
    "text-anchor": "middle" }, "Å"));
  plot.append(svg("polyline", { points: pts.map((p, i) => `${X(i)},${Y(p.resolution)}`).join(" "), fill: "none",
    stroke: "#1f3a5f", "stroke-width": 2 }));
  pts.forEach((p, i) => {
    const dot = svg("circle", { cx: X(i), cy: Y(p.resolution), r: 4, fill: p.commit === state.commit ? "#d62728" : "#1f3a5f",
      class: "history-point" });
    dot.append(svg("title", {}, `${p.resolution.toFixed(2)} Å — ${p.message} (${short(p.commit)})`));
    dot.addEventListener("click", () => selectRev(p.commit));
    plot.append(dot);
    if (pts.length <= 12) {
      plot.append(svg("text", { x: X(i), y: h - mb + 14, "font-size": 10, "text-anchor": "middle" },
        p.iteration != null ? "it " + p.iteration : String(i + 1)));
    }
  });
  plot.append(svg("text", { x: (ml + w - mr) / 2, y: h - 6, "font-size": 11, "text-anchor": "middle" },
    `${name}: resolution per commit (first parents)`));
  return plot;
}

// ------------------------------------------------------------------ species
function isoViewer(hash) {
  const box = el("div", { class: "iso" });
  const img = el("img", { alt: "isosurface", class: "iso-image" });
  const view = { azimuth: 30, elevation: 20, sigma: 2 };
  const label = el("span", {});
  const draw = () => {
    label.textContent = ` az ${view.azimuth}°, el ${view.elevation}°, ${view.sigma} σ`;
    imageInto(img, `/api/arrays/${hash}/iso.png?azimuth=${view.azimuth}&elevation=${view.elevation}&sigma=${view.sigma}`);
  };
  const btn = (text, f) => el("button", { type: "button", onclick: () => { f(); draw(); } }, text);
  box.append(img, el("div", {},
    btn("⟲", () => { view.azimuth = (view.azimuth + 330) % 360; }), btn("⟳", () => { view.azimuth = (view.azimuth + 30) % 360; }),
    btn("▲", () => { view.elevation = Math.min(90, view.elevation + 20); }), btn("▼", () => { view.elevation = Math.max(-90, view.elevation - 20); }),
    btn("σ−", () => { view.sigma = Math.max(0, +(view.sigma - 0.5).toFixed(1)); }), btn("σ+", () => { view.sigma = +(view.sigma + 0.5).toFixed(1); }),
    label));
  draw();
  return box;
}

async function showSpecies(pop, rev) {
  const box = $("species");
  box.replaceChildren();
  if (!pop.species.length) { box.append("no species"); return; }
  for (const s of pop.species) {
    const card = el("div", { class: "card species", "data-species": s.name });
    const meta = el("div", { class: "meta" }, el("b", {}, s.name), el("br"),
      `${s.particles} particles, box ${s.box}, ${s.pixel_size} Å/px, ${s.symmetry}`, el("br"),
      `diameter ${s.diameter} Å, resolution ${s.resolution == null ? "–" : s.resolution.toFixed(2) + " Å"}`, el("br"),
      el("span", { class: "hash" }, short(s.hash)));
    const plots = el("div", { class: "plots" });
    const maps = el("div", { class: "maps" });
    card.append(el("div", { class: "card-head" }, meta, plots), maps);
    box.append(card);
    track(api(`/api/species/${s.hash}`).then((d) => {
      plots.prepend(fscPlot(d.curves || [], d.resolution));
      const grid = el("div", { class: "slices" }, el("span", {}), el("span", {}, "z (y-x plane)"),
        el("span", {}, "y (z-x plane)"), el("span", {}, "x (z-y plane)"));
      for (const [label, h] of Object.entries(d.maps)) {
        grid.append(el("span", {}, label));
        for (const axis of [0, 1, 2]) {
          const img = el("img", { alt: `${label} central slice, axis ${axis}`, class: "slice", "data-map": label,
            "data-axis": axis });
          grid.append(img);
          imageInto(img, `/api/arrays/${h}/slice.png?axis=${axis}`);
        }
      }
      const shown = d.maps.filtered || d.maps.half1;
      maps.append(grid, el("figure", { class: "iso-figure" }, isoViewer(shown),
        el("figcaption", {}, `${d.maps.filtered ? "filtered map" : "half-map 1"}, isosurface`)));
    }).catch((e) => plots.append(el("span", { class: "error" }, e.message))));
    track(api(`/api/species-history?name=${encodeURIComponent(s.name)}&rev=${encodeURIComponent(rev)}`)
      .then((hist) => plots.append(historyPlot(hist.points, s.name)))
      .catch((e) => plots.append(el("span", { class: "error" }, e.message))));
  }
}

// ------------------------------------------------------------------ sources
function ctfPlot(d) {
  const w = 360, h = 170, ml = 30, mr = 10, mt = 10, mb = 34;
  const plot = svg("svg", { width: w, height: h, class: "ctf-fit" });
  const fmax = Math.max(...d.frequency);
  const X = (f) => ml + f / fmax * (w - ml - mr);
  const Y = (v) => mt + (1 - (v + 1) / 2) * (h - mt - mb);
  plot.append(svg("rect", { x: ml, y: mt, width: w - ml - mr, height: h - mt - mb, fill: "#fbfcfd", stroke: "#ccc" }));
  const line = (vals, color, cls) => plot.append(svg("polyline", { points: d.frequency.map((f, i) =>
    `${X(f).toFixed(1)},${Y(vals[i]).toFixed(1)}`).join(" "), fill: "none", stroke: color, "stroke-width": 1.5, class: cls }));
  line(d.power, "#1f3a5f", "power");
  line(d.ctf2.map((c) => 2 * c - 1), "#d62728", "ctf2");
  for (const a of [50, 20, 10, 6, 5, 4, 3]) {
    if (1 / a > fmax) continue;
    plot.append(svg("text", { x: X(1 / a), y: h - mb + 14, "font-size": 10, "text-anchor": "middle" }, a + ""));
  }
  plot.append(svg("text", { x: (ml + w - mr) / 2, y: h - 4, "font-size": 10, "text-anchor": "middle" },
    `Å — power spectrum (blue) vs CTF² at ${(d.defocus_A / 1e4).toFixed(2)} µm (red)` +
    (d.correlation == null ? "" : `, r = ${d.correlation.toFixed(2)}`)));
  return plot;
}

async function showSources(pop) {
  let shownFit = false;
  const box = $("sources");
  box.replaceChildren();
  if (!pop.sources.length) { box.append("no data sources"); return; }
  for (const s of pop.sources) {
    const details = el("details", { open: "" }, el("summary", {}, el("b", {}, s.name), ` — ${s.items} item(s) `,
      el("span", { class: "hash" }, short(s.hash))));
    box.append(details);
    const d = await api(`/api/sources/${s.hash}?limit=50`);
    const table = el("table", { class: "items" }, el("tr", {}, el("th", {}, "thumbnail"), el("th", {}, "item"),
      el("th", {}, "kind"), el("th", { class: "num" }, "defocus (µm)"), el("th", { class: "num" }, "astig. (Å)"),
      el("th", { class: "num" }, "dose (e⁻/Å²)"), el("th", { class: "num" }, "exposures"), el("th", {}, "raw data"),
      el("th", {}, "CTF fit")));
    for (const it of d.items) {
      const img = el("img", { class: "thumb", alt: it.name + " thumbnail" });
      const fitCell = el("td", {});
      const fitRow = el("tr", { hidden: "" }, el("td", { colspan: 9 }));
      if (it.defocus_A != null) {
        const toggle = async () => {
          fitRow.hidden = !fitRow.hidden;
          if (fitRow.dataset.loaded) return;
          fitRow.dataset.loaded = "1";
          try { fitRow.firstChild.append(ctfPlot(await track(api(`/api/items/${it.hash}/ctf`)))); } catch (e) {
            fitRow.firstChild.append(el("span", { class: "error" }, e.message));
          }
        };
        fitCell.append(el("button", { type: "button", onclick: toggle }, "show"));
        if (!shownFit) { shownFit = true; toggle(); } // the first item's fit is open from the start
      }
      table.append(el("tr", { "data-item": it.name }, el("td", {}, img), el("td", {}, it.name), el("td", {}, it.kind),
        el("td", { class: "num" }, it.defocus_A == null ? "–" : (it.defocus_A / 1e4).toFixed(3)),
        el("td", { class: "num" }, fmt(it.astigmatism_A, 0)), el("td", { class: "num" }, fmt(it.dose_e_per_A2, 1)),
        el("td", { class: "num" }, it.exposures == null ? "–" : it.exposures),
        el("td", {}, el("span", { class: "hash" }, short(it.raw)), it.stored ? " (in repository)" : " (in place)"), fitCell), fitRow);
      imageInto(img, `/api/items/${it.hash}/thumbnail.png`);
    }
    details.append(table);
    if (d.total > d.items.length) details.append(el("div", {}, `${d.total - d.items.length} more not shown`));
  }
}

// ------------------------------------------------------------------ pull requests
function reportTable(rows, columns) {
  const table = el("table", {}, el("tr", {}, ...columns.map(([label]) => el("th", {}, label))));
  for (const r of rows.slice(0, 200)) {
    table.append(el("tr", {}, ...columns.map(([, key, f]) => el("td", {}, f ? f(r[key]) : r[key]))));
  }
  if (rows.length > 200) table.append(el("tr", {}, el("td", { colspan: columns.length }, `${rows.length - 200} more not shown`)));
  return table;
}

function showReport(details, r) {
  const dist = (v) => (v == null ? "–" : Number(v).toFixed(1));
  const counts = el("div", { class: "counts" }, ...Object.entries(r.counts || {}).map(([k, v]) =>
    el("span", {}, el("b", {}, v), " " + k.replace(/_/g, " "))));
  details.append(counts, el("div", {}, `incoming: ${(r.incoming || []).join(", ") || "–"}; existing: ${(r.existing || []).join(", ") || "–"}; ` +
    `overlap factor ${r.overlap_factor}`));
  if ((r.conflicts || []).length) details.append(el("h3", {}, "Merge conflicts"), el("ul", {}, ...r.conflicts.map((c) => el("li", {}, JSON.stringify(c)))));
  const sections = [
    ["Collisions", r.collisions, [["item", "item", short], ["incoming", "incoming"], ["id", "incoming_id"], ["existing", "existing"],
      ["id", "existing_id"], ["distance Å", "distance", dist], ["threshold Å", "threshold", dist]]],
    ["Duplicates", r.duplicates, [["item", "item", short], ["species", "species"], ["id a", "id_a"], ["id b", "id_b"],
      ["distance Å", "distance", dist], ["threshold Å", "threshold", dist]]],
    ["Id clashes", r.id_clashes, null],
    ["Shared picks", r.shared, [["id", "id"], ["existing", "existing"], ["incoming", "incoming"], ["item", "item", short], ["distance Å", "distance", dist]]],
    ["Reclassifications", r.reclassifications, [["id", "id"], ["from", "source"], ["to", "target"], ["item", "item", short], ["distance Å", "distance", dist]]],
  ];
  for (const [title, rows, columns] of sections) {
    const list = rows || [];
    details.append(el("h3", {}, `${title} (${list.length})`));
    if (!list.length) continue;
    const cols = columns || Object.keys(list[0]).map((k) => [k.replace(/_/g, " "), k, k === "item" ? short : null]);
    details.append(reportTable(list, cols));
  }
}

async function showPulls() {
  const box = $("pulls");
  box.replaceChildren();
  const data = await api("/api/pulls");
  if (!data.pulls.length) { box.append("no pull requests"); return; }
  for (const p of data.pulls) {
    const counts = p.counts ? Object.entries(p.counts).map(([k, v]) => `${v} ${k.replace(/_/g, " ")}`).join(", ") : "not checked";
    const details = el("details", { "data-pull": p.number }, el("summary", {}, `#${p.number} `, el("b", {}, p.title || p.kind || ""), " ",
      el("span", { class: "state-" + p.state }, p.state || ""), ` ${p.from || ""} → ${p.into || ""}: ${counts}`));
    details.addEventListener("toggle", async () => {
      if (!details.open || details.dataset.loaded) return;
      details.dataset.loaded = "1";
      const full = await track(api(`/api/pulls/${p.number}`));
      if (p.description) details.append(el("p", {}, p.description));
      if (!full.report) { details.append(el("div", {}, "not checked yet (mrepo pr check " + p.number + ")")); return; }
      showReport(details, full.report);
    });
    box.append(details);
    if (data.pulls.length <= 3 && p.state === "open") details.open = true; // few: show their reports at once
  }
}

// ------------------------------------------------------------------ main
function revFromHash() {
  const m = /rev=([^&]+)/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

async function load() {
  const status = $("status");
  status.textContent = "loading…";
  status.className = "";
  document.body.dataset.ready = "0";
  try {
    const overview = await api("/api/overview");
    state.overview = overview;
    $("login").hidden = true;
    $("main").hidden = false;
    $("logout").hidden = !token();
    state.rev = revFromHash() || $("branch").value || overview.default_branch;
    showBranches(overview);
    const graph = await api("/api/graph?limit=200");
    if (!graph.commits.length) {
      showGraph(graph);
      for (const id of ["species", "sources", "commit"]) $(id).replaceChildren("no commits yet");
    } else {
      const detail = await api(`/api/commits/${encodeURIComponent(state.rev)}`);
      state.commit = detail.hash;
      $("viewing").textContent = overview.branches[state.rev] !== undefined ? "" : "viewing " + short(detail.hash);
      showGraph(graph);
      showCommit(detail);
      const pop = await api(`/api/population?rev=${encodeURIComponent(detail.hash)}`);
      await Promise.all([showSpecies(pop, detail.hash), showSources(pop)]);
    }
    await showPulls();
    status.textContent = "";
  } catch (e) {
    if (e.status === 401) {
      showLogin(token() ? "The token was not accepted (unknown or revoked). Enter another one."
                        : "This server needs a token to show its repository.");
      status.textContent = "";
      return;
    }
    status.textContent = e.message;
    status.className = "error";
  } finally {
    if (pending === 0) markReady();
  }
}

$("branch").addEventListener("change", () => selectRev($("branch").value));
window.addEventListener("hashchange", load);
load();
