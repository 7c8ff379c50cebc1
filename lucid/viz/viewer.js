"use strict";
// lucid's graph viewer. Reads the JSON in #lucid-data (written by lucid/viz/html.py), folds module
// calls, lays the visible boxes out (the layered layout of lucid/viz/layout.py) and draws them. A page
// opens legible: at the graph's first input with node text at its full size (LEGIBLE_ZOOM), or the
// whole graph when it fits at that size; a minimap shows the rest and the visible rectangle.
(function () {
  const DATA = JSON.parse(document.getElementById("lucid-data").textContent);
  const M = DATA.metrics;
  const NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const LEGIBLE_ZOOM = 1;        // node text at its CSS size (titles 12 px, lines 11 px)
  const EDGE = 20;               // px of canvas left empty around the graph by "fit" and the start view
  const MINIMAP = 240;           // px: the minimap's longer side
  const state = { stage: 0, folded: new Map(), selected: null, view: { x: 0, y: 0, k: 1 },
                  drag: null, dragged: false, miniDrag: false, matches: new Set(),
                  drawn: [], routes: [] };   // boxes and edge routes drawn, in viewport units

  // ------------------------------------------------------------------ folding
  function foldedSet(p) {
    const key = state.stage + "/" + p;
    if (!state.folded.has(key)) {
      const groups = panelAt(p).groups;
      state.folded.set(key, new Set(groups.filter((g) => g.level === panelAt(p).depth).map((g) => g.id)));
    }
    return state.folded.get(key);
  }

  function panelAt(p) {
    const panel = DATA.stages[state.stage].panels[p];
    if (!panel.byGroup) {
      panel.byGroup = new Map(panel.groups.map((g) => [g.id, g]));
      panel.byItem = new Map(panel.items.map((i) => [i.id, i]));
    }
    return panel;
  }

  function ancestors(panel, groupId) {
    const chain = [];
    for (let g = panel.byGroup.get(groupId); g; g = panel.byGroup.get(g.parent)) chain.push(g);
    return chain;
  }

  function boxOf(panel, folded, item) {
    let box = item.id;
    for (const g of ancestors(panel, item.group)) if (folded.has(g.id)) box = g.id;
    return box;
  }

  function visible(panel, folded) {
    const boxes = new Map(), owner = new Map();
    for (const item of panel.items) {
      const id = boxOf(panel, folded, item);
      owner.set(item.id, id);
      if (boxes.has(id)) continue;
      const isItem = id === item.id, src = isItem ? item : panel.byGroup.get(id);
      const title = (isItem ? "" : "▸ ") + src.title;
      boxes.set(id, { id, src, group: !isItem, kind: isItem ? item.kind : "group", category: isItem ? item.category : "",
                      title, lines: src.lines, labels: [], w: src.size[0], h: src.size[1] });
    }
    const edges = [], seen = new Set();
    for (const [s, d, label] of panel.edges) {
      const a = owner.get(s), b = owner.get(d), key = a + "\u0000" + b + "\u0000" + label;
      if (a === b || seen.has(key)) continue;
      seen.add(key);
      edges.push([a, b, label]);
      const box = boxes.get(a);
      if (!box.labels.includes(label)) box.labels.push(label);
    }
    for (const box of boxes.values()) {
      for (const t of box.labels) box.w = Math.max(box.w, t.length * M.char + 2 * M.pad);
      box.w = Math.max(box.w, box.title.length * M.title + 2 * M.pad);
    }
    return { boxes, edges };
  }

  // ------------------------------------------------------------------ layout (see layout.py)
  function layered(boxes, edges) {
    const succ = new Map(), pred = new Map();
    for (const id of boxes.keys()) { succ.set(id, []); pred.set(id, []); }
    for (const [s, d] of edges) {
      if (s !== d && !succ.get(s).includes(d)) { succ.get(s).push(d); pred.get(d).push(s); }
    }
    const seen = new Set(), components = [];
    for (const id of boxes.keys()) {
      if (seen.has(id)) continue;
      const nodes = [], stack = [id];
      seen.add(id);
      while (stack.length) {
        const n = stack.pop();
        nodes.push(n);
        for (const m of succ.get(n).concat(pred.get(n))) if (!seen.has(m)) { seen.add(m); stack.push(m); }
      }
      components.push(nodes);
    }
    const index = new Map(Array.from(boxes.keys()).map((id, k) => [id, k]));
    for (const c of components) c.sort((a, b) => index.get(a) - index.get(b));
    components.sort((a, b) => b.length - a.length || index.get(a[0]) - index.get(b[0]));
    return pack(components.map((c) => component(c, succ, pred, boxes)));
  }

  function topological(nodes, succ, pred) {
    const inside = new Set(nodes), waiting = new Map(nodes.map((n) => [n, pred.get(n).filter((p) => inside.has(p)).length]));
    const ready = nodes.filter((n) => waiting.get(n) === 0), order = [];
    while (ready.length) {
      const n = ready.shift();
      order.push(n);
      for (const s of succ.get(n)) { waiting.set(s, waiting.get(s) - 1); if (waiting.get(s) === 0) ready.push(s); }
    }
    for (const n of nodes) if (!order.includes(n)) order.push(n);     // cycles (not made by lucid graphs)
    return order;
  }

  function component(nodes, succ0, pred0, boxes) {
    const order = topological(nodes, succ0, pred0), layer = new Map();
    for (const n of order) layer.set(n, Math.max(0, ...pred0.get(n).filter((p) => layer.has(p)).map((p) => layer.get(p) + 1)));
    for (const n of order.slice().reverse()) {
      const below = succ0.get(n).filter((s) => layer.get(s) > layer.get(n)).map((s) => layer.get(s));
      if (below.length) layer.set(n, Math.min(...below) - 1);
    }
    const width = new Map(nodes.map((n) => [n, boxes.get(n).w]));
    const succ = new Map(nodes.map((n) => [n, []])), pred = new Map(nodes.map((n) => [n, []]));
    const chains = [];
    for (const s of nodes) for (const d of succ0.get(s)) {
      const chain = [];
      for (let k = layer.get(s) + 1; k < layer.get(d); k++) {
        const p = "\u0001" + s + "\u0001" + d + "\u0001" + k;
        layer.set(p, k); width.set(p, M.placeholder); succ.set(p, []); pred.set(p, []);
        chain.push(p);
      }
      const path = [s].concat(chain, [d]);
      for (let k = 0; k + 1 < path.length; k++) { succ.get(path[k]).push(path[k + 1]); pred.get(path[k + 1]).push(path[k]); }
      chains.push([s, d, chain]);
    }
    const layers = orderLayers(Array.from(layer.keys()), layer, succ, pred);
    const x = place(layers, width, succ, pred);
    const rows = [];
    let top = M.margin;
    for (const row of layers) {
      const h = Math.max(0, ...row.filter((n) => boxes.has(n)).map((n) => boxes.get(n).h));
      rows.push(top + h / 2);
      top += h + M.layerGap;
    }
    const centres = new Map(nodes.map((n) => [n, [x.get(n), rows[layer.get(n)]]]));
    const routes = chains.map(([s, d, chain]) => [s, d, [[x.get(s), rows[layer.get(s)] + boxes.get(s).h / 2]]
      .concat(chain.map((p) => [x.get(p), rows[layer.get(p)]]), [[x.get(d), rows[layer.get(d)] - boxes.get(d).h / 2]])]);
    const right = Math.max(0, ...Array.from(x.keys()).map((n) => x.get(n) + width.get(n) / 2));
    return { centres, routes, width: right + M.margin, height: top - M.layerGap + M.margin };
  }

  function orderLayers(nodes, layer, succ, pred) {
    const count = Math.max(-1, ...nodes.map((n) => layer.get(n))) + 1;
    const first = new Map(), visit = (n) => {
      const stack = [n];
      while (stack.length) {
        const m = stack.pop();
        if (first.has(m)) continue;
        first.set(m, first.size);
        for (const s of succ.get(m).slice().reverse()) if (!first.has(s)) stack.push(s);
      }
    };
    nodes.forEach(visit);
    let layers = [];
    for (let k = 0; k < count; k++) layers.push(nodes.filter((n) => layer.get(n) === k).sort((a, b) => first.get(a) - first.get(b)));
    let best = layers.map((r) => r.slice()), bestCrossings = crossings(layers, succ);
    for (let sweep = 0; sweep < M.sweeps; sweep++) {
      const down = sweep % 2 === 0;
      for (let i = 0; i < count - 1; i++) {
        const k = down ? i + 1 : count - 2 - i;
        const fixed = new Map(layers[down ? k - 1 : k + 1].map((n, j) => [n, j]));
        const near = down ? pred : succ;
        const key = (n, j) => {
          const at = near.get(n).filter((m) => fixed.has(m)).map((m) => fixed.get(m));
          return at.length ? at.reduce((a, b) => a + b, 0) / at.length : j;
        };
        layers[k] = layers[k].map((n, j) => [key(n, j), j, n]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map((e) => e[2]);
      }
      const c = crossings(layers, succ);
      if (c < bestCrossings) { best = layers.map((r) => r.slice()); bestCrossings = c; }
    }
    return best;
  }

  function crossings(layers, succ) {
    let total = 0;
    for (let k = 0; k + 1 < layers.length; k++) {
      const at = new Map(layers[k + 1].map((n, j) => [n, j])), ends = [];
      layers[k].forEach((n, i) => { for (const m of succ.get(n)) if (at.has(m)) ends.push([i, at.get(m)]); });
      for (let a = 0; a < ends.length; a++) for (let b = a + 1; b < ends.length; b++) {
        if ((ends[a][0] - ends[b][0]) * (ends[a][1] - ends[b][1]) < 0) total++;
      }
    }
    return total;
  }

  function place(layers, width, succ, pred) {
    const x = new Map();
    for (const row of layers) {
      let left = M.margin;
      for (const n of row) { x.set(n, left + width.get(n) / 2); left += width.get(n) + M.gap; }
    }
    for (let sweep = 0; sweep < 2 * M.sweeps; sweep++) {
      const down = sweep % 2 === 0, near = down ? pred : succ;
      const rows = down ? layers.slice(1) : layers.slice(0, -1).reverse();
      for (const row of rows) {
        const wanted = row.map((n) => {
          const at = near.get(n).map((m) => x.get(m));
          return at.length ? at.reduce((a, b) => a + b, 0) / at.length : x.get(n);
        });
        spaced(row, wanted, width).forEach((v, j) => x.set(row[j], v));
      }
    }
    const shift = M.margin - Math.min(...Array.from(x.keys()).map((n) => x.get(n) - width.get(n) / 2));
    for (const n of x.keys()) x.set(n, x.get(n) + shift);
    return x;
  }

  function spaced(row, wanted, width) {
    const offsets = [];
    let total = 0;
    row.forEach((n, k) => { if (k) total += (width.get(row[k - 1]) + width.get(n)) / 2 + M.gap; offsets.push(total); });
    const blocks = [];
    row.forEach((n, k) => {
      const weight = n.startsWith("\u0001") ? 4 : 1;
      blocks.push([weight * (wanted[k] - offsets[k]), weight, 1]);
      while (blocks.length > 1 && blocks[blocks.length - 2][0] / blocks[blocks.length - 2][1] > blocks[blocks.length - 1][0] / blocks[blocks.length - 1][1]) {
        const [s, w, c] = blocks.pop(), last = blocks[blocks.length - 1];
        last[0] += s; last[1] += w; last[2] += c;
      }
    });
    const base = [];
    for (const [s, w, c] of blocks) for (let j = 0; j < c; j++) base.push(s / w);
    return base.map((b, k) => b + offsets[k]);
  }

  function pack(parts) {
    let limit = Math.max(0, ...parts.map((p) => p.width));
    limit = Math.max(limit, Math.sqrt(parts.reduce((a, p) => a + p.width * p.height, 0)));
    const result = { centres: new Map(), routes: [], width: 0, height: 0 };
    let left = 0, top = 0, rowHeight = 0;
    for (const part of parts) {
      if (left && left + part.width > limit) { left = 0; top += rowHeight; rowHeight = 0; }
      for (const [n, [x, y]] of part.centres) result.centres.set(n, [x + left, y + top]);
      for (const [s, d, pts] of part.routes) result.routes.push([s, d, pts.map(([x, y]) => [x + left, y + top])]);
      left += part.width;
      rowHeight = Math.max(rowHeight, part.height);
      result.width = Math.max(result.width, left);
      result.height = Math.max(result.height, top + rowHeight);
    }
    return result;
  }

  // ------------------------------------------------------------------ drawing
  function el(name, attrs, parent, text) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  function curve(points) {
    let d = "M" + points[0][0].toFixed(1) + "," + points[0][1].toFixed(1);
    for (let k = 0; k + 1 < points.length; k++) {
      const [x0, y0] = points[k], [x1, y1] = points[k + 1], m = (y0 + y1) / 2;
      d += " C" + x0.toFixed(1) + "," + m.toFixed(1) + " " + x1.toFixed(1) + "," + m.toFixed(1) + " " + x1.toFixed(1) + "," + y1.toFixed(1);
    }
    return d;
  }

  function draw() {
    const viewport = $("viewport"), stage = DATA.stages[state.stage], titled = stage.panels.length > 1;
    viewport.replaceChildren();
    let left = 0;
    const failures = [], top = titled ? 28 : 0;
    state.drawn = [];
    state.routes = [];
    stage.panels.forEach((_, p) => {
      const panel = panelAt(p), { boxes, edges } = visible(panel, foldedSet(p));
      const lay = layered(boxes, edges), g = el("g", { transform: "translate(" + left + "," + top + ")", "data-panel": p }, viewport);
      if (panel.failure) failures.push(panel.failure);
      if (titled) el("text", { class: "panel-title", x: M.margin, y: 0 }, g, panel.title);
      for (const [, , pts] of lay.routes) {
        el("path", { class: "edge", d: curve(pts), "marker-end": "url(#arrow)" }, g);
        state.routes.push(pts.map(([x, y]) => [x + left, y + top]));
      }
      for (const box of boxes.values()) {
        const [cx, cy] = lay.centres.get(box.id);
        drawBox(g, box, [cx, cy], p, panel);
        state.drawn.push({ panel: p, id: box.id, kind: box.kind, category: box.category,
                           x: left + cx - box.w / 2, y: top + cy - box.h / 2, w: box.w, h: box.h });
      }
      left += lay.width + 48;
    });
    $("banner").hidden = !failures.length;
    $("banner").textContent = failures.map((f) => "trace failed: " + f).join("\n");
    drawTree();
    drawMinimap();
    applyView();
  }

  function drawBox(parent, box, [cx, cy], p, panel) {
    const classes = ["node", box.kind, box.category];
    if (state.selected && state.selected.panel === p && state.selected.id === box.id) classes.push("selected");
    if (state.matches.has(p + "/" + box.id)) classes.push("match");
    const g = el("g", { class: classes.filter(Boolean).join(" "), "data-id": box.id, "data-panel": p }, parent);
    const x0 = cx - box.w / 2, y0 = cy - box.h / 2;
    el("rect", { class: "box", x: x0, y: y0, width: box.w, height: box.h, rx: 4 }, g);
    [box.title].concat(box.lines).forEach((line, k) => {
      el("text", { class: k ? "" : "title", x: cx, y: y0 + M.pad + (k + 0.8) * M.line, "text-anchor": "middle" }, g, line);
    });
    box.labels.slice(0, 3).forEach((label, k) => {
      const half = label.length * M.label / 2 + 3, y = y0 + box.h + 3 + k * 13;
      el("rect", { class: "shape-label", x: cx - half, y, width: 2 * half, height: 13, rx: 2 }, g);
      el("text", { class: "shape-label", x: cx, y: y + 10, "text-anchor": "middle" }, g, label);
    });
    g.addEventListener("click", (event) => {
      event.stopPropagation();
      if (state.dragged) return;
      state.selected = { panel: p, id: box.id };
      if (box.group) foldedSet(p).delete(box.id);        // a folded module opens on click
      showDetails(panel, p, box);
      draw();
    });
  }

  // ------------------------------------------------------------------ side panel
  function quantity(n, unit) {
    if (n === null) return "? " + unit;          // a count over symbolic sizes
    for (const [f, prefix] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) if (n >= f) return (n / f).toFixed(1) + " " + prefix + unit;
    return n + " " + unit;
  }

  function table(parent, rows) {
    const t = document.createElement("table");
    for (const row of rows) {
      const tr = t.insertRow();
      for (const cell of row) tr.insertCell().textContent = cell;
    }
    parent.appendChild(t);
  }

  function heading(parent, text) {
    const h = document.createElement("h3");
    h.textContent = text;
    parent.appendChild(h);
  }

  function showDetails(panel, p, box) {
    const side = $("details");
    side.replaceChildren();
    if (box.group) return groupDetails(side, panel, p, box.src);
    const item = box.src, d = item.details;
    heading(side, box.title);
    if (d.failed) { const e = document.createElement("p"); e.className = "failed"; e.textContent = d.failed; side.appendChild(e); }
    const rows = [["kind", d.kind], ["op", d.op]];
    if (d.kind === "op" || d.kind === "fused") rows.push(["module", d.name ? d.name + ": " + d.cls : "(root)"]);
    else rows.push(["name", d.name]);
    rows.push(["output", d.output || "(not computed)"], ["parameters", String(d.params)], ["FLOPs", quantity(d.flops, "FLOP")],
              ["output bytes", quantity(d.bytes, "B")]);
    if (d.offset !== null) rows.push(["arena offset", String(d.offset)]);
    table(side, rows);
    if (d.operands.length) { heading(side, "inputs"); table(side, d.operands.map(([role, name, type]) => [role, name, type])); }
    const attrs = Object.entries(d.attrs);
    if (attrs.length) { heading(side, "attributes"); table(side, attrs); }
    if (d.members.length) {
      heading(side, "fused group");
      table(side, d.members.map((m) => [m.op, m.module, m.output, quantity(m.flops, "FLOP")]));
    }
    const chain = ancestors(panel, item.group);
    if (chain.length) {
      heading(side, "inside");
      for (const g of chain) side.appendChild(foldLink(p, g));
    }
  }

  function groupDetails(side, panel, p, group) {
    heading(side, group.label);
    const d = group.details;
    table(side, [["nodes", String(d.nodes)], ["parameters", String(d.params)], ["FLOPs", quantity(d.flops, "FLOP")],
                 ["output bytes", quantity(d.bytes, "B")]]);
    side.appendChild(foldLink(p, group));
  }

  function foldLink(p, group) {
    const b = document.createElement("button");
    const folded = foldedSet(p).has(group.id);
    b.textContent = (folded ? "open " : "fold ") + group.label;
    b.addEventListener("click", () => { toggle(p, group.id); });
    const div = document.createElement("div");
    div.appendChild(b);
    return div;
  }

  function toggle(p, id) {
    const folded = foldedSet(p);
    if (folded.has(id)) folded.delete(id); else folded.add(id);
    draw();
  }

  function drawTree() {
    const tree = $("tree"), stage = DATA.stages[state.stage];
    tree.replaceChildren();
    stage.panels.forEach((_, p) => {
      const panel = panelAt(p), folded = foldedSet(p);
      if (stage.panels.length > 1) { const t = document.createElement("div"); t.className = "panel-name"; t.textContent = panel.title; tree.appendChild(t); }
      for (const g of panel.groups) {
        const row = document.createElement("div");
        row.style.paddingLeft = (g.level - 1) * 14 + "px";
        row.textContent = (folded.has(g.id) ? "▸ " : "▾ ") + g.label;
        row.dataset.group = g.id;
        row.addEventListener("click", () => toggle(p, g.id));
        tree.appendChild(row);
      }
      if (!panel.groups.length) { const none = document.createElement("div"); none.textContent = "(no modules)"; tree.appendChild(none); }
    });
  }

  // ------------------------------------------------------------------ search, pan, zoom, export
  function search(go) {
    const q = $("search").value.trim().toLowerCase();
    state.matches = new Set();
    let first = null;
    DATA.stages[state.stage].panels.forEach((_, p) => {
      const panel = panelAt(p);
      for (const item of q ? panel.items : []) {
        const d = item.details, text = [d.op, d.name, d.cls, item.title].join(" ").toLowerCase();
        if (!text.includes(q)) continue;
        state.matches.add(p + "/" + boxOf(panel, foldedSet(p), item));
        if (!first) first = { p, panel, item };
      }
    });
    if (go && first) {
      for (const g of ancestors(first.panel, first.item.group)) foldedSet(first.p).delete(g.id);
      state.matches.add(first.p + "/" + first.item.id);
      state.selected = { panel: first.p, id: first.item.id };
      showDetails(first.panel, first.p, { group: false, src: first.item, title: first.item.title });
    }
    draw();
    if (go && first) centreOn(first.p, first.item.id);
  }

  function centreOn(p, id) {           // a node found by search, at a zoom where its text is legible
    const box = state.drawn.find((b) => b.panel === p && b.id === id);
    if (box) centreAt(box.x + box.w / 2, box.y + box.h / 2, Math.max(state.view.k, LEGIBLE_ZOOM));
  }

  function centreAt(x, y, k) {         // viewport point (x, y) to the canvas centre, at zoom k
    const canvas = $("canvas").getBoundingClientRect();
    state.view = { k, x: canvas.width / 2 - x * k, y: canvas.height / 2 - y * k };
    applyView();
  }

  function applyView() {
    const v = state.view, canvas = $("canvas").getBoundingClientRect();
    $("viewport").setAttribute("transform", "translate(" + v.x + "," + v.y + ") scale(" + v.k + ")");
    const seen = { x: -v.x / v.k, y: -v.y / v.k, width: canvas.width / v.k, height: canvas.height / v.k };
    for (const [k, value] of Object.entries(seen)) $("minimap-view").setAttribute(k, value);
  }

  function fitZoom(box, canvas) {
    return Math.min(1.5, (canvas.width - 2 * EDGE) / box.width, (canvas.height - 2 * EDGE) / box.height);
  }

  function fit() {                     // the whole graph, however small its text gets ("f")
    const box = $("viewport").getBBox(), canvas = $("canvas").getBoundingClientRect();
    if (!box.width || !box.height) return;
    const k = fitZoom(box, canvas);
    state.view = { k, x: (canvas.width - box.width * k) / 2 - box.x * k, y: EDGE - box.y * k };
    applyView();
  }

  // The view a page and a stage open with ("0", "r"): the whole graph when it fits with its text
  // legible, else the first input at the top (the start of the graph), its text at full size.
  function startView() {
    const box = $("viewport").getBBox(), canvas = $("canvas").getBoundingClientRect();
    const input = state.drawn.find((b) => b.kind === "input") || state.drawn[0];
    if (!box.width || !box.height || !input || fitZoom(box, canvas) >= LEGIBLE_ZOOM) return fit();
    const k = LEGIBLE_ZOOM;
    state.view = { k, x: along(input.x + input.w / 2, box.x, box.x + box.width, canvas.width, k),
                   y: along(input.y + input.h / 2, box.y, box.y + box.height, canvas.height, k) };
    applyView();
  }

  // The pan offset along one axis that centres `at` on a canvas `span` px long, pushed back so that
  // at most EDGE px of canvas stay empty before the graph's `start` and after its `end`.
  function along(at, start, end, span, k) {
    if ((end - start) * k + 2 * EDGE <= span) return (span - (start + end) * k) / 2;
    return Math.min(EDGE - start * k, Math.max(span - EDGE - end * k, span / 2 - at * k));
  }

  // ------------------------------------------------------------------ minimap
  function drawMinimap() {
    const mini = $("minimap"), box = $("viewport").getBBox(), g = $("minimap-graph");
    g.replaceChildren();
    if (!box.width || !box.height) return;
    const scale = MINIMAP / Math.max(box.width, box.height);
    mini.setAttribute("viewBox", [box.x, box.y, box.width, box.height].join(" "));
    mini.setAttribute("width", Math.max(40, box.width * scale));
    mini.setAttribute("height", Math.max(40, box.height * scale));
    for (const pts of state.routes) el("polyline", { class: "mini-edge", points: pts.map((pt) => pt.join(",")).join(" ") }, g);
    for (const b of state.drawn) {
      el("rect", { class: ["mini", b.kind, b.category].filter(Boolean).join(" "), x: b.x, y: b.y, width: b.w, height: b.h }, g);
    }
  }

  function minimapGo(event) {          // centre the view on the minimap point under the pointer
    const at = new DOMPoint(event.clientX, event.clientY).matrixTransform($("minimap").getScreenCTM().inverse());
    centreAt(at.x, at.y, state.view.k);
  }

  function exportSvg() {
    const box = $("viewport").getBBox(), clone = $("canvas").cloneNode(true);
    clone.querySelector("#viewport").setAttribute("transform", "translate(" + (20 - box.x) + "," + (20 - box.y) + ")");
    clone.setAttribute("width", box.width + 40);
    clone.setAttribute("height", box.height + 40);
    el("style", {}, clone, document.querySelector("style").textContent);
    const blob = new Blob([new XMLSerializer().serializeToString(clone)], { type: "image/svg+xml" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = $("graph-name").textContent + "-" + DATA.stages[state.stage].name + ".svg";
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  function setUp() {
    const canvas = $("canvas"), defs = el("defs", {}, null);
    const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8c959f" }, marker);
    canvas.insertBefore(defs, canvas.firstChild);
    const select = $("stage");
    DATA.stages.forEach((s, k) => { const o = document.createElement("option"); o.value = k; o.textContent = s.name; select.appendChild(o); });
    state.stage = Math.max(0, DATA.stages.findIndex((s) => s.name === DATA.initial));
    select.value = state.stage;
    select.addEventListener("change", () => { state.stage = Number(select.value); state.selected = null; search(false); startView(); });
    $("search").addEventListener("input", () => search(false));
    $("search").addEventListener("keydown", (e) => { if (e.key === "Enter") search(true); });
    $("fit").addEventListener("click", fit);
    $("start").addEventListener("click", startView);
    $("export").addEventListener("click", exportSvg);
    const foldAll = (level) => DATA.stages[state.stage].panels.forEach((_, p) => {
      const set = foldedSet(p);
      set.clear();
      for (const g of panelAt(p).groups) if (g.level === level) set.add(g.id);
    });
    $("fold-all").addEventListener("click", () => { foldAll(1); draw(); startView(); });
    $("unfold-all").addEventListener("click", () => { foldAll(0); draw(); startView(); });
    const keys = { f: fit, 0: startView, r: startView };      // listed in the page's help (html.py)
    document.addEventListener("keydown", (e) => {
      const typing = e.target instanceof Element && e.target.closest("input, select, textarea");
      if (typing || e.ctrlKey || e.metaKey || e.altKey || !keys[e.key]) return;
      e.preventDefault();
      keys[e.key]();
    });
    $("minimap").addEventListener("mousedown", (e) => { e.preventDefault(); state.miniDrag = true; minimapGo(e); });
    window.addEventListener("resize", applyView);
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = canvas.getBoundingClientRect(), v = state.view, f = Math.exp(-e.deltaY * 0.0015);
      const px = e.clientX - r.left, py = e.clientY - r.top;
      v.x = px - (px - v.x) * f; v.y = py - (py - v.y) * f; v.k *= f;
      applyView();
    }, { passive: false });
    canvas.addEventListener("mousedown", (e) => { state.drag = [e.clientX, e.clientY, state.view.x, state.view.y]; state.dragged = false; });
    window.addEventListener("mousemove", (e) => {
      if (state.miniDrag) minimapGo(e);
      if (!state.drag) return;
      const [x, y, vx, vy] = state.drag;
      if (Math.abs(e.clientX - x) + Math.abs(e.clientY - y) > 3) { state.dragged = true; canvas.classList.add("dragging"); }
      if (state.dragged) { state.view.x = vx + e.clientX - x; state.view.y = vy + e.clientY - y; applyView(); }
    });
    window.addEventListener("mouseup", () => { state.drag = null; state.miniDrag = false; canvas.classList.remove("dragging"); setTimeout(() => { state.dragged = false; }, 0); });
    draw();
    startView();
  }

  setUp();
})();
