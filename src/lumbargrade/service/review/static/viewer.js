// The two pictures of the study page, drawn on canvases from the pixels and label maps.
//
// AxialViewer: one level's axial slice with its label map; window/level, zoom, pan; brush and
// eraser on one label at a time, with undo/redo. SagittalViewer: the sagittal slice with the disc
// landmarks and the lines of the chosen axial slices; the selected level's landmark can be dragged
// and snaps to the line of the axial slice nearest to it.

export const LABELS = [
  { value: 1, name: "dural sac", color: [0, 220, 255] },
  { value: 2, name: "disc", color: [255, 210, 0] },
  { value: 3, name: "facet L", color: [255, 70, 70] },
  { value: 4, name: "facet R", color: [230, 60, 160] },
  { value: 5, name: "foramen L", color: [60, 230, 90] },
  { value: 6, name: "foramen R", color: [170, 240, 60] },
];
const COLOR = Object.fromEntries(LABELS.map((l) => [l.value, l.color]));

function percentiles(data, lo, hi) {
  const step = Math.max(1, Math.floor(data.length / 50000));
  const picked = [];
  for (let i = 0; i < data.length; i += step) if (isFinite(data[i])) picked.push(data[i]);
  const s = Float64Array.from(picked).sort(); // a typed array sorts numerically, and fast
  if (!s.length) return [0, 1];
  const at = (p) => s[Math.min(s.length - 1, Math.max(0, Math.round((p / 100) * (s.length - 1))))];
  return [at(lo), at(hi)];
}

function greyImage(canvas, data, rows, cols, width, level) {
  canvas.width = cols;
  canvas.height = rows;
  const ctx = canvas.getContext("2d");
  const im = ctx.createImageData(cols, rows);
  const d = im.data, lo = level - width / 2, k = 255 / Math.max(width, 1e-6);
  for (let i = 0; i < rows * cols; i++) {
    let v = (data[i] - lo) * k;
    v = v < 0 ? 0 : v > 255 ? 255 : v;
    d[4 * i] = d[4 * i + 1] = d[4 * i + 2] = v;
    d[4 * i + 3] = 255;
  }
  ctx.putImageData(im, 0, 0);
}

function sizeCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(50, canvas.clientWidth), h = Math.max(50, canvas.clientHeight);
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  return { w, h, dpr };
}

function text(ctx, s, x, y, color, size) {
  ctx.font = `bold ${size}px sans-serif`;
  ctx.lineWidth = 3;
  ctx.strokeStyle = "#000";
  ctx.strokeText(s, x, y);
  ctx.fillStyle = color;
  ctx.fillText(s, x, y);
}

export class AxialViewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.grey = document.createElement("canvas");
    this.over = document.createElement("canvas");
    this.show = { 1: true, 2: true, 3: true, 4: true, 5: true, 6: true };
    this.fill = 0.3;
    this.tool = "view";
    this.label = 1;
    this.radius = 3;
    this.undoStack = [];
    this.redoStack = [];
    this.touched = new Set(); // labels painted or erased since load
    this.userWindow = false; // true once the reader set the window: kept across levels
    this.onedit = null; // () => void, after each stroke / undo / redo
    this.onwindow = null; // (width, level) => void
    this.cursor = null;
    this.image = null;
    this.labels = null;
    this._drag = null;
    this._bind();
  }

  load({ image, rows, cols, spacing, labels, edges }) {
    this.image = image;
    this.rows = rows;
    this.cols = cols;
    this.aspect = spacing ? spacing[0] / spacing[1] : 1; // row height / column width
    this.labels = labels ? new Uint8Array(labels) : null;
    this.original = labels ? new Uint8Array(labels) : null;
    this.edges = edges || null;
    this.undoStack = [];
    this.redoStack = [];
    this.touched = new Set();
    const [lo, hi] = percentiles(image, 1, 99);
    this.auto = [Math.max(hi - lo, 1e-3), (hi + lo) / 2];
    if (!this.wl || !this.userWindow) this.wl = this.auto.slice(); // a reader's window is kept
    if (this.onwindow) this.onwindow(this.wl[0], this.wl[1]);
    this._renderGrey();
    this._renderOverlay();
    this.resetView();
  }

  get dirty() {
    if (!this.labels || !this.original) return false;
    for (let i = 0; i < this.labels.length; i++) if (this.labels[i] !== this.original[i]) return true;
    return false;
  }

  setWindow(width, level, byUser = true) {
    this.userWindow = byUser;
    this.wl = [Math.max(width, 1e-3), level];
    this._renderGrey();
    this.draw();
    if (this.onwindow) this.onwindow(this.wl[0], this.wl[1]);
  }

  autoWindow() {
    this.setWindow(this.auto[0], this.auto[1], false);
  }

  setShow(value, on) {
    this.show[value] = on;
    this._renderOverlay();
    this.draw();
  }

  setFill(f) {
    this.fill = f;
    this._renderOverlay();
    this.draw();
  }

  _renderGrey() {
    if (!this.image) return;
    greyImage(this.grey, this.image, this.rows, this.cols, this.wl[0], this.wl[1]);
  }

  _renderOverlay() {
    const w = this.cols, h = this.rows;
    this.over.width = w || 1;
    this.over.height = h || 1;
    if (!this.labels) return;
    const ctx = this.over.getContext("2d");
    const im = ctx.createImageData(w, h), d = im.data, lab = this.labels;
    const fill = Math.round(this.fill * 255);
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        const i = r * w + c, v = lab[i];
        if (!v || !this.show[v] || !COLOR[v]) continue;
        const edge = r === 0 || c === 0 || r === h - 1 || c === w - 1 || lab[i - 1] !== v ||
          lab[i + 1] !== v || lab[i - w] !== v || lab[i + w] !== v;
        const col = COLOR[v];
        d[4 * i] = col[0]; d[4 * i + 1] = col[1]; d[4 * i + 2] = col[2];
        d[4 * i + 3] = edge ? 255 : fill;
      }
    }
    ctx.putImageData(im, 0, 0);
  }

  // The box [r0, r1, c0, c1] the view opens on: every labelled region with a margin, else the
  // whole slice.
  _maskBox() {
    let r0 = Infinity, r1 = -1, c0 = Infinity, c1 = -1;
    if (this.labels) {
      for (let i = 0; i < this.labels.length; i++) {
        if (!this.labels[i]) continue;
        const r = Math.floor(i / this.cols), c = i % this.cols;
        if (r < r0) r0 = r; if (r > r1) r1 = r; if (c < c0) c0 = c; if (c > c1) c1 = c;
      }
    }
    if (r1 < 0) return [0, this.rows, 0, this.cols];
    const pad = Math.max(8, Math.round(0.12 * Math.max(this.rows, this.cols)));
    return [r0 - pad, r1 + 1 + pad, c0 - pad, c1 + 1 + pad];
  }

  fitTo([r0, r1, c0, c1]) {
    const { w, h } = sizeCanvas(this.canvas);
    const s = Math.min(w / (c1 - c0), h / ((r1 - r0) * this.aspect));
    this.view = { s, ox: w / 2 - ((c0 + c1) / 2) * s, oy: h / 2 - ((r0 + r1) / 2) * s * this.aspect };
    this.draw();
  }

  resetView() {
    if (this.image) this.fitTo(this._maskBox());
  }

  fitAll() {
    if (this.image) this.fitTo([0, this.rows, 0, this.cols]);
  }

  toImage(x, y) {
    const v = this.view;
    return { r: (y - v.oy) / (v.s * this.aspect), c: (x - v.ox) / v.s };
  }

  draw() {
    if (!this.image || !this.view) return;
    const { w, h, dpr } = sizeCanvas(this.canvas);
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, w, h);
    const v = this.view;
    const dw = this.cols * v.s, dh = this.rows * v.s * this.aspect;
    ctx.imageSmoothingEnabled = v.s < 4;
    ctx.drawImage(this.grey, v.ox, v.oy, dw, dh);
    if (this.labels) {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(this.over, v.ox, v.oy, dw, dh);
    }
    if (this.cursor && (this.tool === "brush" || this.tool === "eraser")) {
      ctx.beginPath();
      ctx.ellipse(this.cursor.x, this.cursor.y, (this.radius + 0.5) * v.s,
                  ((this.radius + 0.5) * v.s), 0, 0, 2 * Math.PI);
      ctx.strokeStyle = this.tool === "eraser" ? "#fff" : `rgb(${COLOR[this.label].join(",")})`;
      ctx.setLineDash(this.tool === "eraser" ? [4, 3] : []);
      ctx.lineWidth = 1.5;
      ctx.stroke();
      ctx.setLineDash([]);
    }
    if (this.edges) {
      const fs = 16;
      ctx.textBaseline = "middle";
      text(ctx, this.edges.left, 4, h / 2, "#fff", fs);
      text(ctx, this.edges.right, w - fs, h / 2, "#fff", fs);
      text(ctx, this.edges.top, w / 2 - 5, fs * 0.8, "#fff", fs);
      text(ctx, this.edges.bottom, w / 2 - 5, h - fs * 0.8, "#fff", fs);
    }
  }

  _paint(r0, c0, r1, c1) {
    const lab = this.labels, R = this.radius, erase = this.tool === "eraser", value = this.label;
    const dist = Math.hypot(r1 - r0, c1 - c0);
    const steps = Math.max(1, Math.ceil(dist / Math.max(0.5, R / 2)));
    const ry = R / this.aspect; // the brush is round in millimetres
    for (let s = 0; s <= steps; s++) {
      const rc = r0 + ((r1 - r0) * s) / steps, cc = c0 + ((c1 - c0) * s) / steps;
      const ra = Math.max(0, Math.floor(rc - ry)), rb = Math.min(this.rows - 1, Math.ceil(rc + ry));
      const ca = Math.max(0, Math.floor(cc - R)), cb = Math.min(this.cols - 1, Math.ceil(cc + R));
      for (let r = ra; r <= rb; r++) {
        for (let c = ca; c <= cb; c++) {
          const dr = (r - rc) * this.aspect, dc = c - cc;
          if (dr * dr + dc * dc > (R + 0.5) * (R + 0.5)) continue;
          const i = r * this.cols + c;
          if (erase) { if (lab[i] === value) lab[i] = 0; } else lab[i] = value;
        }
      }
    }
    this.touched.add(value);
  }

  undo() {
    if (!this.undoStack.length) return;
    this.redoStack.push(this.labels);
    this.labels = this.undoStack.pop();
    this._renderOverlay();
    this.draw();
    if (this.onedit) this.onedit();
  }

  redo() {
    if (!this.redoStack.length) return;
    this.undoStack.push(this.labels);
    this.labels = this.redoStack.pop();
    this._renderOverlay();
    this.draw();
    if (this.onedit) this.onedit();
  }

  _bind() {
    const cv = this.canvas;
    cv.addEventListener("contextmenu", (e) => e.preventDefault());
    cv.addEventListener("pointerdown", (e) => {
      if (!this.image) return;
      cv.setPointerCapture(e.pointerId);
      const p = this.toImage(e.offsetX, e.offsetY);
      const editing = (this.tool === "brush" || this.tool === "eraser") && this.labels && e.button === 0;
      if (e.button === 2) this._drag = { kind: "wl", x: e.offsetX, y: e.offsetY, wl: this.wl.slice() };
      else if (editing) {
        this.undoStack.push(new Uint8Array(this.labels));
        if (this.undoStack.length > 100) this.undoStack.shift();
        this.redoStack = [];
        this._drag = { kind: "paint", r: p.r, c: p.c };
        this._paint(p.r, p.c, p.r, p.c);
        this._renderOverlay();
        this.draw();
      } else this._drag = { kind: "pan", x: e.offsetX, y: e.offsetY, ox: this.view.ox, oy: this.view.oy };
      e.preventDefault();
    });
    cv.addEventListener("pointermove", (e) => {
      if (!this.image) return;
      this.cursor = { x: e.offsetX, y: e.offsetY };
      const d = this._drag;
      if (d && d.kind === "paint") {
        const p = this.toImage(e.offsetX, e.offsetY);
        this._paint(d.r, d.c, p.r, p.c);
        d.r = p.r; d.c = p.c;
        this._renderOverlay();
      } else if (d && d.kind === "pan") {
        this.view.ox = d.ox + e.offsetX - d.x;
        this.view.oy = d.oy + e.offsetY - d.y;
      } else if (d && d.kind === "wl") {
        const k = Math.max(d.wl[0], 1) / 200;
        this.setWindow(d.wl[0] + (e.offsetX - d.x) * k, d.wl[1] + (e.offsetY - d.y) * k);
        return;
      }
      this.draw();
    });
    const end = () => {
      const d = this._drag;
      this._drag = null;
      if (d && d.kind === "paint" && this.onedit) this.onedit();
    };
    cv.addEventListener("pointerup", end);
    cv.addEventListener("pointercancel", end);
    cv.addEventListener("pointerleave", () => { this.cursor = null; this.draw(); });
    cv.addEventListener("wheel", (e) => {
      if (!this.image) return;
      e.preventDefault();
      const f = Math.exp(-e.deltaY * 0.0015);
      const v = this.view;
      v.ox = e.offsetX - (e.offsetX - v.ox) * f;
      v.oy = e.offsetY - (e.offsetY - v.oy) * f;
      v.s *= f;
      this.draw();
    }, { passive: false });
    window.addEventListener("resize", () => this.draw());
  }
}

export class SagittalViewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.grey = document.createElement("canvas");
    this.level = null;
    this.editable = false;
    this.ondrop = null; // (level, {row, col} displayed, candidate) => void
    this.candidate = null;
    this.moved = null;
    this._bind();
  }

  load({ image, rows, cols, view }) {
    this.image = image;
    this.rows = rows;
    this.cols = cols;
    this.v = view; // the study's sagittal view: spacing, landmarks, lines, candidates, transform
    const [lo, hi] = percentiles(image, 1, 99.5);
    greyImage(this.grey, image, rows, cols, Math.max(hi - lo, 1e-3), (hi + lo) / 2);
    this.moved = null;
    this.candidate = null;
    this.draw();
  }

  select(level) {
    this.level = level;
    this.moved = null;
    this.candidate = null;
    this.draw();
  }

  _layout() {
    const { w, h, dpr } = sizeCanvas(this.canvas);
    const sp = this.v.spacing, aspect = sp[0] / sp[1];
    const s = Math.min(w / this.cols, h / (this.rows * aspect));
    return { w, h, dpr, s, aspect, ox: (w - this.cols * s) / 2, oy: (h - this.rows * s * aspect) / 2 };
  }

  _xy(p, L) {
    return [L.ox + (p[1] + 0.5) * L.s, L.oy + (p[0] + 0.5) * L.s * L.aspect];
  }

  // The candidate axial slice nearest a displayed point (perpendicular distance in mm to its line).
  nearest(p) {
    const sp = this.v.spacing;
    let best = null;
    for (const cand of this.v.candidates || []) {
      const [a, b] = cand.line;
      const ay = a[0] * sp[0], ax = a[1] * sp[1], by = b[0] * sp[0], bx = b[1] * sp[1];
      const py = p[0] * sp[0], px = p[1] * sp[1];
      const len = Math.hypot(by - ay, bx - ax);
      if (len < 1e-6) continue;
      const d = Math.abs((bx - ax) * (ay - py) - (ax - px) * (by - ay)) / len;
      const t = ((px - ax) * (bx - ax) + (py - ay) * (by - ay)) / (len * len);
      if (t < -0.05 || t > 1.05) continue; // beyond that slice's field of view
      if (!best || d < best.distance_mm) best = { ...cand, distance_mm: d };
    }
    return best;
  }

  draw() {
    if (!this.image) return;
    const L = this._layout();
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(L.dpr, 0, 0, L.dpr, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, L.w, L.h);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(this.grey, L.ox, L.oy, this.cols * L.s, this.rows * L.s * L.aspect);
    const line = (seg, color, width, dash) => {
      const a = this._xy(seg[0], L), b = this._xy(seg[1], L);
      ctx.beginPath();
      ctx.moveTo(a[0], a[1]);
      ctx.lineTo(b[0], b[1]);
      ctx.strokeStyle = color;
      ctx.lineWidth = width;
      ctx.setLineDash(dash || []);
      ctx.stroke();
      ctx.setLineDash([]);
    };
    for (const [level, seg] of Object.entries(this.v.lines || {})) {
      const hi = level === this.level;
      line(seg, hi ? "rgb(255,160,0)" : "rgb(150,150,150)", hi ? 3 : 1);
    }
    if (this.candidate) line(this.candidate.line, "rgb(0,255,255)", 2, [6, 4]);
    const fs = 13;
    ctx.textBaseline = "middle";
    for (const [level, p0] of Object.entries(this.v.landmarks || {})) {
      const p = level === this.level && this.moved ? this.moved : p0;
      const [x, y] = this._xy(p, L);
      const hi = level === this.level;
      ctx.beginPath();
      ctx.arc(x, y, hi ? 6 : 4, 0, 2 * Math.PI);
      ctx.strokeStyle = "rgb(255,60,200)";
      ctx.lineWidth = 2;
      ctx.stroke();
      if (hi) { ctx.fillStyle = "rgb(255,60,200)"; ctx.fill(); }
      text(ctx, level, x + 9, y, "rgb(255,60,200)", fs);
    }
    text(ctx, "S", 4, fs, "#fff", fs + 2);
    text(ctx, "A", 4, L.h / 2, "#fff", fs + 2);
    text(ctx, "P", L.w - fs - 2, L.h / 2, "#fff", fs + 2);
  }

  _bind() {
    const cv = this.canvas;
    let dragging = false;
    const point = (e) => {
      const L = this._layout();
      return [(e.offsetY - L.oy) / (L.s * L.aspect) - 0.5, (e.offsetX - L.ox) / L.s - 0.5];
    };
    cv.addEventListener("pointerdown", (e) => {
      if (!this.image || !this.editable || !this.level || e.button !== 0) return;
      const lm = this.moved || (this.v.landmarks || {})[this.level];
      if (!lm) return;
      const L = this._layout();
      const [x, y] = this._xy(lm, L);
      if (Math.hypot(x - e.offsetX, y - e.offsetY) > 14) return;
      dragging = true;
      cv.setPointerCapture(e.pointerId);
      e.preventDefault();
    });
    cv.addEventListener("pointermove", (e) => {
      if (!dragging) {
        if (!this.image || !this.editable || !this.level) return;
        const lm = (this.v.landmarks || {})[this.level];
        if (!lm) return;
        const [x, y] = this._xy(this.moved || lm, this._layout());
        cv.style.cursor = Math.hypot(x - e.offsetX, y - e.offsetY) <= 14 ? "grab" : "default";
        return;
      }
      this.moved = point(e);
      this.candidate = this.nearest(this.moved);
      this.draw();
    });
    const end = () => {
      if (!dragging) return;
      dragging = false;
      if (this.ondrop && this.moved) this.ondrop(this.level, this.moved, this.candidate);
    };
    cv.addEventListener("pointerup", end);
    cv.addEventListener("pointercancel", end);
    window.addEventListener("resize", () => this.draw());
  }

  // Displayed [row, col] -> the stored slice's [row, col] (see levels.mid_sagittal.from_display).
  toStored(p) {
    const [t, fr, fc] = this.v.transform, st = this.v.stored_shape;
    const h = t ? st[1] : st[0], w = t ? st[0] : st[1];
    let r = p[0], c = p[1];
    if (fc) c = w - 1 - c;
    if (fr) r = h - 1 - r;
    return t ? { row: c, col: r } : { row: r, col: c };
  }
}
