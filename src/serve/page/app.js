// The page of `pexen serve`: the DAG laid out by the server, live states from the event stream,
// counts, filters, a task panel, and buttons that start and cancel runs. No framework; every
// text from the server goes through textContent, never HTML.
"use strict";

const STATES = ["waiting", "running", "pass", "warn", "fail", "error", "timeout", "skip"];
const FAILED = new Set(["fail", "error", "timeout"]);
const BOX_W = 170, BOX_H = 26, GAP_X = 18, GAP_Y = 46, PAD = 10;
const TABLE_ROWS = 500;      // rows drawn at most; the filter narrows the rest
const GRAPH_DEFAULT_MAX = 400; // bigger trees open on the table
const GRAPH_MAX = 3000;      // beyond this the DAG is not drawn at all

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";

const ui = {
  dir: ".",
  tasks: [],               // {name, layer, row, tags, state, box, up:[], down:[], index}
  byName: new Map(),
  run: null,               // {id, done, outcome, started, duration}
  lastEventId: 0,
  streamGen: 0,            // bumps when a new stream replaces the old one
  stateFilter: new Set(),
  focus: null,             // a task name, or null
  selected: null,
  dirty: new Set(),
  frame: 0,
  firstFailure: null,
  finishedAt: null,
};

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token }, options.headers || {});
  const response = await fetch("/api/v1" + path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function say(text) {
  const m = $("message");
  m.textContent = text || "";
  m.hidden = !text;
}

// ---- the tree ------------------------------------------------------------------------------

async function loadTree() {
  const layout = await (await api("/graph")).json();
  ui.dir = layout.dir || ".";
  ui.tasks = layout.nodes.map((n, index) => ({
    name: n.name, layer: n.layer, line: n.line, col: n.col, tags: n.tags, index,
    state: "none", box: null, tr: null, up: [], down: [], duration: null,
  }));
  ui.byName = new Map(ui.tasks.map((t) => [t.name, t]));
  for (const [p, d] of layout.edges) {
    ui.tasks[d].up.push(p);
    ui.tasks[p].down.push(d);
  }
  ui.edges = layout.edges;
  const view = ui.tasks.length <= GRAPH_DEFAULT_MAX ? "graph" : "table";
  $("view").value = view;
  if (ui.tasks.length > GRAPH_MAX) {
    $("view").querySelector("option[value=graph]").disabled = true;
  }
  drawGraph();
  showView();
}

function svgEl(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const k in attrs) el.setAttribute(k, attrs[k]);
  return el;
}

function drawGraph() {
  const svg = $("graph");
  svg.replaceChildren();
  if (ui.tasks.length > GRAPH_MAX) return;
  let width = 0, height = 0;
  const pos = (t) => ({ x: PAD + t.col * (BOX_W + GAP_X), y: PAD + t.line * (BOX_H + GAP_Y) });
  const defs = svgEl("defs", {});
  const marker = svgEl("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto" });
  marker.appendChild(svgEl("path", { d: "M0,0 L10,5 L0,10 z", fill: "#889" }));
  defs.appendChild(marker);
  svg.appendChild(defs);
  const edges = svgEl("g", { class: "edges" });
  for (const [p, d] of ui.edges) {
    const a = pos(ui.tasks[p]), b = pos(ui.tasks[d]);
    const x1 = a.x + BOX_W / 2, y1 = a.y + BOX_H, x2 = b.x + BOX_W / 2, y2 = b.y;
    const path = svgEl("path", {
      class: "edge", "marker-end": "url(#arrow)",
      d: `M${x1},${y1} C${x1},${y1 + GAP_Y / 2} ${x2},${y2 - GAP_Y / 2} ${x2},${y2}`,
      "data-from": String(p), "data-to": String(d),
    });
    edges.appendChild(path);
  }
  svg.appendChild(edges);
  const boxes = svgEl("g", { class: "boxes" });
  for (const t of ui.tasks) {
    const { x, y } = pos(t);
    const g = svgEl("g", { class: "task st-" + t.state, transform: `translate(${x},${y})`, "data-name": t.name, "data-state": t.state });
    g.appendChild(svgEl("rect", { width: BOX_W, height: BOX_H }));
    const label = svgEl("text", { x: 6, y: 17 });
    label.textContent = t.name.length > 26 ? "…" + t.name.slice(-25) : t.name;
    const title = svgEl("title", {});
    title.textContent = t.name;
    g.appendChild(title);
    g.appendChild(label);
    g.addEventListener("click", () => openPanel(t.name));
    t.box = g;
    boxes.appendChild(g);
    width = Math.max(width, x + BOX_W + PAD);
    height = Math.max(height, y + BOX_H + PAD);
  }
  svg.appendChild(boxes);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
}

function showView() {
  const graph = $("view").value === "graph";
  $("graph-wrap").hidden = !graph;
  $("table-wrap").hidden = graph;
  applyFilters();
}

// ---- filters -------------------------------------------------------------------------------

// The filter as `pexen run --filter` reads it: a value without `*`, `?` or `[` matches anywhere
// in the name; a glob matches the whole name or any run of whole `/`-separated components of it
// (`port-*` selects `net/port-a`); `*` stays within a component, `**` crosses them.
function filterToRegExp(glob) {
  if (!/[*?[]/.test(glob)) return new RegExp(glob.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*" && glob[i + 1] === "*") { re += ".*"; i++; if (glob[i + 1] === "/") { re += "(?:/)?"; i++; } }
    else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "[" && glob.indexOf("]", i + 2) > 0) {
      const end = glob.indexOf("]", i + 2);
      let body = glob.slice(i + 1, end);
      if (body[0] === "!") body = "^" + body.slice(1);
      re += "[" + body.replace(/\\/g, "\\\\") + "]";
      i = end;
    } else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp("(?:^|/)" + re + "(?:/|$)");
}

function matcher() {
  const glob = $("filter").value.trim();
  const tag = $("tag").value.trim();
  let re = null;
  if (glob) { try { re = filterToRegExp(glob); } catch (_) { re = null; } }
  let focus = null;
  if (ui.focus && ui.byName.has(ui.focus)) focus = related(ui.byName.get(ui.focus));
  return (t) =>
    (!re || re.test(t.name)) &&
    (!tag || t.tags.includes(tag)) &&
    (ui.stateFilter.size === 0 || ui.stateFilter.has(t.state)) &&
    (!focus || focus.has(t.index));
}

// A task's upstream and downstream, itself included.
function related(task) {
  const seen = new Set([task.index]);
  for (const dir of ["up", "down"]) {
    const stack = [task.index];
    while (stack.length) {
      for (const n of ui.tasks[stack.pop()][dir]) {
        if (!seen.has(n)) { seen.add(n); stack.push(n); }
      }
    }
  }
  return seen;
}

function applyFilters() {
  const match = matcher();
  if ($("view").value === "graph") {
    const shown = new Set();
    for (const t of ui.tasks) {
      if (!t.box) continue;
      const on = match(t);
      if (on) shown.add(t.index);
      t.box.classList.toggle("dim", !on);
    }
    for (const e of $("graph").querySelectorAll(".edge")) {
      const on = shown.has(Number(e.dataset.from)) && shown.has(Number(e.dataset.to));
      e.classList.toggle("dim", !on);
    }
  } else {
    drawTable(match);
  }
  const note = $("focus-note");
  note.hidden = !ui.focus;
  note.textContent = ui.focus ? "focus: " + ui.focus + " (click to clear)" : "";
  drawCounts();
  updateCli();
}

function drawTable(match) {
  const body = $("table").tBodies[0];
  const rows = [];
  let total = 0;
  for (const t of ui.tasks) {
    t.tr = null;
    if (!match(t)) continue;
    total++;
    if (rows.length >= TABLE_ROWS) continue;
    const tr = document.createElement("tr");
    tr.dataset.name = t.name;
    tr.dataset.state = t.state;
    for (const text of [t.name, t.state, t.tags.join(", "), t.duration == null ? "" : t.duration.toFixed(2) + " s"]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    tr.children[1].className = "st-" + t.state;
    tr.addEventListener("click", () => openPanel(t.name));
    t.tr = tr;
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  $("more").textContent = total > rows.length ? `${total - rows.length} more tasks: narrow the filter to see them` : "";
}

function drawCounts() {
  const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  for (const t of ui.tasks) if (t.state in counts) counts[t.state]++;
  const box = $("counts");
  if (!box.childElementCount) {
    for (const s of STATES) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "count st-" + s;
      b.dataset.state = s;
      b.title = "show only " + s + " tasks (click again to clear)";
      b.addEventListener("click", () => {
        if (ui.stateFilter.has(s)) ui.stateFilter.delete(s); else ui.stateFilter.add(s);
        applyFilters();
      });
      box.appendChild(b);
    }
  }
  for (const b of box.children) {
    const s = b.dataset.state;
    b.textContent = s + " " + counts[s];
    b.dataset.count = String(counts[s]);
    b.classList.toggle("active", ui.stateFilter.has(s));
  }
}

// ---- live states ---------------------------------------------------------------------------

function setState(task, state) {
  task.state = state;
  ui.dirty.add(task);
  if (!ui.frame) ui.frame = requestAnimationFrame(flush);
}

// Redraws what changed, at most once a frame.
function flush() {
  ui.frame = 0;
  for (const t of ui.dirty) {
    if (t.box) {
      t.box.setAttribute("class", "task st-" + t.state + (ui.selected === t.name ? " selected" : ""));
      t.box.dataset.state = t.state;
    }
    if (t.tr) {
      t.tr.dataset.state = t.state;
      t.tr.children[1].textContent = t.state;
      t.tr.children[1].className = "st-" + t.state;
      if (t.duration != null) t.tr.children[3].textContent = t.duration.toFixed(2) + " s";
    }
  }
  ui.dirty.clear();
  if (ui.stateFilter.size || ui.focus) applyFilters(); else drawCounts();
  drawStatus();
}

function apply(event) {
  const task = event.task ? ui.byName.get(event.task) : null;
  switch (event.type) {
    case "run-started":
      ui.run.started = ui.run.started || Date.now();
      break;
    case "task-started":
      if (task) setState(task, "running");
      break;
    case "task-finished":
      if (task) {
        task.duration = event.duration_s;
        setState(task, event.outcome);
        if (FAILED.has(event.outcome) && !ui.firstFailure) pinFailure(event);
      }
      break;
    case "run-finished":
      ui.run.done = true;
      ui.run.outcome = event.outcome;
      ui.run.duration = event.duration_s;
      drawStatus();
      break;
    default:
      break;
  }
}

function pinFailure(event) {
  ui.firstFailure = event.task;
  const f = $("first-failure");
  f.textContent = `first failure: ${event.task} (${event.outcome}${event.exit_code != null ? ", exit code " + event.exit_code : ""}): click for its output`;
  f.hidden = false;
}

function drawStatus() {
  const run = ui.run;
  let text = "no run yet";
  if (run) text = run.done ? `run ${run.id}: ${run.outcome || "ended"}` : `run ${run.id}: running`;
  $("run-status").textContent = text;
  $("run-status").dataset.done = run && run.done ? "true" : "false";
  $("run-status").dataset.run = run ? run.id : "";
  const going = !!run && !run.done;
  $("cancel").disabled = !going;
  for (const id of ["run-all", "run-failed", "run-selection"]) $(id).disabled = going;
  $("run-failed").disabled = going || !ui.tasks.some((t) => FAILED.has(t.state));
  $("junit").disabled = !run || !run.done;
}

function tick() {
  const run = ui.run;
  if (!run) { $("elapsed").textContent = ""; return; }
  const s = run.done && run.duration != null ? run.duration : (Date.now() - run.started) / 1000;
  $("elapsed").textContent = s.toFixed(1) + " s";
}

// Follows a run's events from the start (or from the last one seen), reconnecting when the
// stream breaks before the run's end.
async function follow(id) {
  const gen = ++ui.streamGen;
  for (;;) {
    try {
      const headers = ui.lastEventId ? { "Last-Event-ID": String(ui.lastEventId) } : {};
      const response = await api(`/runs/${encodeURIComponent(id)}/events`, { headers });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (gen !== ui.streamGen) { reader.cancel(); return; }
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        // One pass over the chunk, one copy of the rest: a replay delivers megabytes at once.
        let start = 0, end;
        while ((end = buffer.indexOf("\n\n", start)) >= 0) {
          const block = buffer.slice(start, end);
          start = end + 2;
          let eid = null, data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) eid = Number(line.slice(3).trim());
            else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
          }
          if (!data) continue;
          if (eid != null) ui.lastEventId = eid;
          apply(JSON.parse(data));
        }
        buffer = buffer.slice(start);
      }
      if (ui.run && ui.run.done) return;
    } catch (e) {
      if (gen !== ui.streamGen) return;
      say("event stream: " + e.message + " (retrying)");
    }
    await new Promise((r) => setTimeout(r, 1000));
    if (gen !== ui.streamGen) return;
  }
}

// Shows run `summary`: every task of its selection waits, the others are not in it.
async function attach(summary) {
  const full = await (await api(`/runs/${encodeURIComponent(summary.id)}`)).json();
  const selected = new Set(full.selection || []);
  ui.run = { id: full.id, done: false, outcome: null, started: Date.parse(full.started) || Date.now(), duration: null };
  ui.lastEventId = 0;
  ui.firstFailure = null;
  $("first-failure").hidden = true;
  for (const t of ui.tasks) {
    t.duration = null;
    setState(t, selected.has(t.name) ? "waiting" : "none");
  }
  drawStatus();
  follow(full.id);
}

async function start(body) {
  say("");
  try {
    const response = await api("/runs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    await attach(await response.json());
  } catch (e) {
    say("cannot start the run: " + e.message);
  }
}

// A task name as a glob that matches only itself.
function escapeGlob(name) {
  return name.replace(/[[\]*?]/g, (c) => "[" + c + "]");
}

function selection() {
  const body = {};
  const glob = $("filter").value.trim();
  const tag = $("tag").value.trim();
  if (glob) body.filter = [glob];
  if (tag) body.tags = [tag];
  return body;
}

function shellQuote(s) {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'";
}

function updateCli() {
  const body = selection();
  const parts = ["pexen", "run", shellQuote(ui.dir)];
  for (const f of body.filter || []) parts.push("--filter", shellQuote(f));
  for (const t of body.tags || []) parts.push("--tag", shellQuote(t));
  $("cli-command").value = parts.join(" ");
}

// ---- the task panel ------------------------------------------------------------------------

async function openPanel(name) {
  const previous = ui.selected && ui.byName.get(ui.selected);
  ui.selected = name;
  if (previous) setState(previous, previous.state);
  const task = ui.byName.get(name);
  if (task) setState(task, task.state);
  $("panel").hidden = false;
  $("panel-name").textContent = name;
  const facts = $("panel-facts");
  const results = $("panel-results");
  facts.replaceChildren();
  results.replaceChildren();
  $("panel-stdout").textContent = "";
  $("panel-stderr").textContent = "";
  $("panel-attempts").replaceChildren();
  const fact = (k, v) => {
    if (v == null || v === "") return;
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = String(v);
    facts.append(dt, dd);
  };
  if (task) fact("tags", task.tags.join(", "));
  if (!ui.run || !task || task.state === "none") {
    fact("state", "not in the run shown");
    return;
  }
  let record;
  try {
    record = await (await api(`/runs/${encodeURIComponent(ui.run.id)}/tasks/${name.split("/").map(encodeURIComponent).join("/")}`)).json();
  } catch (e) {
    fact("error", e.message);
    return;
  }
  if (ui.selected !== name) return;
  fact("state", record.outcome || record.state);
  fact("attempt", record.attempt);
  fact("exit code", record.exit_code);
  fact("duration", record.duration_s != null ? record.duration_s.toFixed(3) + " s" : null);
  fact("resumed", record.resumed ? "yes, from the journal" : null);
  fact("cause", record.cause);
  fact("message", record.message);
  for (const r of record.results || []) {
    const li = document.createElement("li");
    li.textContent = r.status + ": " + r.message;
    results.appendChild(li);
  }
  $("panel-stdout").textContent = record.stdout || "";
  $("panel-stderr").textContent = record.stderr || "";
  for (const a of record.failed_attempts || []) {
    const h = document.createElement("h3");
    h.textContent = `attempt ${a.attempt}: ${a.outcome}${a.message ? " (" + a.message + ")" : ""}`;
    const pre = document.createElement("pre");
    pre.textContent = (a.stdout || "") + (a.stderr ? "\n--- stderr ---\n" + a.stderr : "");
    $("panel-attempts").append(h, pre);
  }
}

// ---- wiring --------------------------------------------------------------------------------

function wire() {
  $("view").addEventListener("change", showView);
  let timer = 0;
  for (const id of ["filter", "tag"]) {
    $(id).addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(applyFilters, 120); });
  }
  $("run-all").addEventListener("click", () => start({}));
  $("run-selection").addEventListener("click", () => start(selection()));
  $("run-failed").addEventListener("click", () => {
    const failed = ui.tasks.filter((t) => FAILED.has(t.state)).map((t) => escapeGlob(t.name));
    if (failed.length) start({ filter: failed, resume: true });
  });
  $("cancel").addEventListener("click", async () => {
    if (!ui.run) return;
    try { await api(`/runs/${encodeURIComponent(ui.run.id)}/cancel`, { method: "POST" }); } catch (e) { say(e.message); }
  });
  $("junit").addEventListener("click", async () => {
    if (!ui.run) return;
    try {
      const blob = await (await api(`/runs/${encodeURIComponent(ui.run.id)}/junit`)).blob();
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = `pexen-run-${ui.run.id}.xml`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (e) { say(e.message); }
  });
  $("copy-cli").addEventListener("click", async () => {
    updateCli();
    const field = $("cli-command");
    field.hidden = false;
    field.select();
    try { await navigator.clipboard.writeText(field.value); } catch (_) { /* selected for copying by hand */ }
  });
  $("panel-close").addEventListener("click", () => {
    $("panel").hidden = true;
    const t = ui.selected && ui.byName.get(ui.selected);
    ui.selected = null;
    if (t) setState(t, t.state);
  });
  $("panel-focus").addEventListener("click", () => { ui.focus = ui.selected; applyFilters(); });
  $("focus-note").addEventListener("click", () => { ui.focus = null; applyFilters(); });
  $("first-failure").addEventListener("click", () => { if (ui.firstFailure) openPanel(ui.firstFailure); });
  setInterval(tick, 250);
}

async function main() {
  wire();
  drawStatus();
  if (!token) {
    say("no access token: open the URL that `pexen serve` printed (it ends with #token=…)");
    return;
  }
  try {
    await loadTree();
    const runs = await (await api("/runs")).json();
    if (runs.length) await attach(runs[runs.length - 1]);
    drawStatus();
    document.body.dataset.ready = "true";
  } catch (e) {
    say(e.message);
  }
}

main();
