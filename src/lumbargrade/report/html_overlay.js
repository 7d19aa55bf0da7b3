/* lumbargrade report.html: draws the overlays in the browser from the label maps and landmark
   coordinates embedded in the page (script type="application/json" id="lg-data"). Plain ES5,
   no dependencies; without it the page shows the plain slices. */
(function () {
  "use strict";
  var COLORS = {1: [0, 220, 255], 2: [255, 210, 0], 3: [255, 70, 70], 4: [255, 70, 70],
                5: [60, 230, 90], 6: [60, 230, 90]};
  var LANDMARK = "rgb(255,60,200)", LINE = "rgb(255,160,0)", LINE_OTHER = "rgb(140,140,140)";
  var node = document.getElementById("lg-data");
  if (!node) return;
  var data = JSON.parse(node.textContent);
  var state = {show: {1: true, 2: true, 3: true, 4: true, 5: true, 6: true}, lines: true, fill: 0.25};
  var views = [];

  function decode(rle, n) {
    var out = new Uint8Array(n), p = 0;
    for (var i = 0; i < rle.length; i += 2) { out.fill(rle[i], p, p + rle[i + 1]); p += rle[i + 1]; }
    return out;
  }

  function overlay(lab, w, h) {
    var c = document.createElement("canvas");
    c.width = w; c.height = h;
    var ctx = c.getContext("2d"), im = ctx.createImageData(w, h), d = im.data;
    var fill = Math.round(state.fill * 255);
    for (var r = 0; r < h; r++) {
      for (var q = 0; q < w; q++) {
        var i = r * w + q, v = lab[i];
        if (!v || !state.show[v] || !COLORS[v]) continue;
        var edge = r === 0 || q === 0 || r === h - 1 || q === w - 1 || lab[i - 1] !== v ||
          lab[i + 1] !== v || lab[i - w] !== v || lab[i + w] !== v;
        var col = COLORS[v];
        d[4 * i] = col[0]; d[4 * i + 1] = col[1]; d[4 * i + 2] = col[2];
        d[4 * i + 3] = edge ? 255 : fill;
      }
    }
    ctx.putImageData(im, 0, 0);
    return c;
  }

  function sized(canvas, w, h, spacing) {
    var k = Math.max(1, Math.round(512 / Math.max(w, h)));
    var base = Math.min(spacing[0], spacing[1]);
    canvas.width = Math.round(w * k * spacing[1] / base);
    canvas.height = Math.round(h * k * spacing[0] / base);
  }

  function text(ctx, s, x, y, color, size) {
    ctx.font = "bold " + size + "px sans-serif";
    ctx.lineWidth = 3; ctx.strokeStyle = "#000"; ctx.strokeText(s, x, y);
    ctx.fillStyle = color; ctx.fillText(s, x, y);
  }

  function drawAxial(v) {
    var c = v.canvas, ctx = c.getContext("2d");
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(v.img, 0, 0, c.width, c.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(overlay(v.lab, v.w, v.h), 0, 0, c.width, c.height);
    var fs = Math.max(12, Math.round(c.width / 30)), e = v.edges;
    ctx.textBaseline = "middle";
    text(ctx, e.left, 4, c.height / 2, "#fff", fs);
    text(ctx, e.right, c.width - fs, c.height / 2, "#fff", fs);
    text(ctx, e.top, c.width / 2 - fs / 3, fs * 0.7, "#fff", fs);
    text(ctx, e.bottom, c.width / 2 - fs / 3, c.height - fs * 0.7, "#fff", fs);
  }

  function drawSagittal(v) {
    var s = data.sagittal, c = v.canvas, ctx = c.getContext("2d");
    var sy = c.height / s.shape[0], sx = c.width / s.shape[1];
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(v.img, 0, 0, c.width, c.height);
    if (!state.lines) return;
    var fs = Math.max(11, Math.round(c.width / 34));
    function xy(p) { return [(p[1] + 0.5) * sx, (p[0] + 0.5) * sy]; }
    Object.keys(s.lines).forEach(function (level) {
      var a = xy(s.lines[level][0]), b = xy(s.lines[level][1]), hi = level === v.level;
      ctx.strokeStyle = hi ? LINE : LINE_OTHER; ctx.lineWidth = hi ? 3 : 1;
      ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
    });
    ctx.textBaseline = "middle";
    Object.keys(s.landmarks).forEach(function (level) {
      var p = xy(s.landmarks[level]), r = Math.max(3, fs / 3);
      ctx.beginPath(); ctx.arc(p[0], p[1], r, 0, 2 * Math.PI);
      ctx.strokeStyle = LANDMARK; ctx.lineWidth = 2; ctx.stroke();
      if (level === v.level) { ctx.fillStyle = LANDMARK; ctx.fill(); }
      text(ctx, level, p[0] + r + 3, p[1], LANDMARK, fs);
    });
    text(ctx, "S", 4, fs, "#fff", fs + 2);
    text(ctx, "A", 4, c.height / 2, "#fff", fs + 2);
    text(ctx, "P", c.width - fs - 4, c.height / 2, "#fff", fs + 2);
  }

  function redraw() {
    views.forEach(function (v) { if (v.kind === "axial") drawAxial(v); else drawSagittal(v); });
  }

  function ready(img, fn) {
    if (img.complete && img.naturalWidth) fn(); else img.addEventListener("load", fn);
  }

  Array.prototype.forEach.call(document.querySelectorAll("img.lg-axial"), function (img) {
    var d = data.levels[img.getAttribute("data-level")];
    if (!d) return;
    var v = {kind: "axial", img: img, h: d.size[0], w: d.size[1], edges: d.edges,
             lab: decode(d.labels, d.size[0] * d.size[1]), canvas: document.createElement("canvas")};
    v.canvas.setAttribute("role", "img");
    v.canvas.setAttribute("aria-label", img.alt);
    sized(v.canvas, v.w, v.h, d.spacing);
    img.style.display = "none";
    img.parentNode.insertBefore(v.canvas, img);
    views.push(v);
    ready(img, function () { drawAxial(v); });
  });

  var sagImg = document.getElementById("lg-sag");
  if (sagImg && data.sagittal) {
    var s = data.sagittal;
    var cans = Array.prototype.slice.call(document.querySelectorAll("canvas.lg-sag"));
    var overview = document.createElement("canvas");
    sagImg.parentNode.insertBefore(overview, sagImg);
    sagImg.style.display = "none";
    cans.push(overview);
    cans.forEach(function (c) {
      sized(c, s.shape[1], s.shape[0], s.spacing);
      var v = {kind: "sagittal", img: sagImg, canvas: c, level: c.getAttribute("data-level")};
      views.push(v);
      ready(sagImg, function () { drawSagittal(v); });
    });
  }

  var controls = document.querySelector(".lg-controls");
  if (controls) {
    controls.hidden = false;
    controls.addEventListener("input", function (ev) {
      var t = ev.target;
      if (t.hasAttribute("data-opacity")) state.fill = Number(t.value) / 100;
      var which = t.getAttribute("data-show");
      if (which === "lines") state.lines = t.checked;
      else if (which) which.split(",").forEach(function (k) { state.show[k] = t.checked; });
      redraw();
    });
  }
}());
