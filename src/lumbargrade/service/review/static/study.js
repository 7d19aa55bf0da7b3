// The study page: grades table, axial editor, sagittal landmarks, details, reader's grades, sign-off.
import { api, el, getArray, getJSON, sendJSON, GRADE_CLASS, num, readerName, setReaderName, when } from "/static/common.js";
import { AxialViewer, SagittalViewer, LABELS } from "/static/viewer.js";
import { encodeGrayPNG } from "/static/png.js";

const $ = (id) => document.getElementById(id);
const sid = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
const FINDINGS = [["foramen_left", "Foramen L"], ["foramen_right", "Foramen R"], ["facet_left", "Facet L"], ["facet_right", "Facet R"]];
const MEASURES = ["dural_sac_area_mm2", "disc_area_mm2", "dural_sac_ap_mm", "disc_ap_mm", "dural_sac_transverse_mm",
  "disc_transverse_mm", "area_ratio", "ap_ratio", "sqrt_area_ratio"];

const axial = new AxialViewer($("axial"));
const sag = new SagittalViewer($("sagittal"));
window.lgReview = { axial, sag }; // for scripted use (the browser tests) and debugging
const images = new Map(); // SOPInstanceUID -> {data, rows, cols}
let detail = null;
let current = null; // level, e.g. "L4/L5"
let preview = null; // {level, point, candidate} while another slice is shown
let busy = false;

function record(level) { return detail.report.levels.find((r) => r.level === level); }
function info(level) { return detail.levels.find((l) => l.level === level); }

function message(text, kind = "info") {
  const box = $("messages");
  box.replaceChildren(el("p", { class: `msg ${kind}`, role: kind === "error" ? "alert" : "status" }, text));
}

function setBusy(on, text) {
  busy = on;
  document.body.classList.toggle("busy", on);
  for (const b of document.querySelectorAll("button")) if (b.id !== "signoff-cancel") b.disabled = on;
  if (on && text) message(text);
  if (!on) updateButtons();
}

function reader() {
  const name = $("reader").value.trim();
  if (!name) {
    message("Enter your name as Reader first: every change records who made it.", "error");
    $("reader").focus();
    return null;
  }
  setReaderName(name);
  return name;
}

function confirmSigned() {
  if (detail.status !== "signed") return true;
  return confirm("This study is signed. Saving a change withdraws the signature (the history keeps it). Continue?");
}

// --- header, summary, tabs ---------------------------------------------------------------------

function renderHeader() {
  const p = detail.patient || {};
  const who = [p.PatientName && p.PatientName.replace(/\^/g, " ").trim(), p.PatientID, p.StudyDate].filter(Boolean).join(" · ");
  $("title").textContent = who || `Study ${detail.report.study_instance_uid || sid}`;
  $("title").title = `StudyInstanceUID ${detail.report.study_instance_uid || "-"} (folder ${sid})`;
  const st = $("status");
  st.textContent = detail.status + (detail.report.signed ? ` by ${detail.report.signed.by}` : "");
  st.className = `badge s-${detail.status.replace(" ", "-")}`;
  $("html-report").href = detail.files.html;
  $("signoff-open").hidden = !detail.editable || detail.status === "signed";
  document.title = `lumbargrade review: ${detail.report.study_instance_uid || sid}`;
}

function gradeCell(grade, sub, readerGrade) {
  if (readerGrade) {
    return el("td", { class: GRADE_CLASS[readerGrade] || "" }, el("b", {}, readerGrade),
      el("br"), el("small", {}, `reader (model: ${grade || "-"})`));
  }
  return el("td", { class: GRADE_CLASS[grade] || "" }, grade || "-", el("br"), el("small", {}, sub || ""));
}

function renderSummary() {
  const head = el("tr", {}, el("th", {}, "Level"), el("th", {}, "Central canal"), el("th", {}, "Ratio"),
    el("th", {}, "Dural sac mm²"), ...FINDINGS.map(([, t]) => el("th", {}, t)), el("th", {}, ""));
  const rows = detail.report.levels.map((rec) => {
    const c = rec.central_canal || {}, tree = c.tree || {}, rg = (rec.reader || {}).grades || {};
    const flags = info(rec.level).needs_review;
    const tr = el("tr", { class: rec.level === current ? "selected" : "", dataset: { level: rec.level },
      onclick: () => selectLevel(rec.level) },
      el("td", {}, el("a", { href: `#${rec.level.replace("/", "-")}` }, rec.level)),
      gradeCell(c.grade, c.grade_source, rg.central_canal),
      el("td", {}, num(tree.ratio), el("br"), el("small", {}, tree.ratio_name || "")),
      el("td", {}, num((rec.measurements || {}).dural_sac_area_mm2)),
      ...FINDINGS.map(([k]) => gradeCell((rec[k] || {}).label, rec[k] ? `p=${num(rec[k].probability, 2)}` : "", rg[k])),
      el("td", {}, rec.regraded ? el("span", { class: "tag", title: `${rec.regraded.source}` }, "changed") : "",
        flags.length ? el("span", { class: "tag warn", title: flags.join("; ") }, "needs review") : "",
        (rec.warnings || []).length ? el("span", { class: "tag", title: rec.warnings.join("; ") }, `${rec.warnings.length} warning(s)`) : ""));
    return tr;
  });
  $("summary").replaceChildren(el("div", { class: "scroll" }, el("table", { class: "grades" },
    el("thead", {}, head), el("tbody", {}, rows))));
  const tabs = detail.report.levels.map((rec) => el("button", {
    type: "button", class: rec.level === current ? "tab active" : "tab", dataset: { level: rec.level },
    onclick: () => selectLevel(rec.level) }, rec.level));
  $("level-tabs").replaceChildren(...tabs);
}

// --- details of the selected level ------------------------------------------------------------

function renderDetails() {
  const rec = record(current), c = rec.central_canal || {}, cnn = c.cnn || {}, tree = c.tree;
  const m = rec.measurements || {}, defs = detail.definitions || {};
  const parts = [el("h2", {}, `${current}`)];
  const flags = info(current).needs_review;
  if (flags.length) parts.push(el("p", { class: "msg error" }, `Needs review: ${flags.join("; ")}`));
  parts.push(el("h3", {}, "Central canal: the rule"));
  parts.push(tree ? el("p", {}, "Decision tree: the ratio ", el("b", {}, `${tree.ratio_name} = ${num(tree.ratio, 4)}`),
    " satisfies the rule ", el("code", {}, tree.rule), ", so the tree grades the central canal ", el("b", {}, tree.grade), ".")
    : el("p", { class: "note" }, "No decision-tree grade (no tree in the model pack, or the ratio could not be measured)."));
  const keys = MEASURES.filter((k) => k in m);
  parts.push(el("h3", {}, "Measurements"), el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "Measurement"), el("th", {}, "Value"), el("th", {}, "Definition"))),
    el("tbody", {}, keys.map((k) => el("tr", {}, el("td", {}, k), el("td", {}, num(m[k], 4)), el("td", {}, defs[k] || "")))))));
  const crow = [];
  if (cnn.probabilities) crow.push(el("tr", {}, el("td", {}, "Central canal (4 grades)"), el("td", {}, cnn.grade),
    el("td", {}, ["normal", "mild", "moderate", "severe"].map((n, i) => `${n} ${num(cnn.probabilities[i], 2)}`).join(", "))));
  if (cnn.binary_probability !== undefined && cnn.binary_probability !== null) crow.push(el("tr", {},
    el("td", {}, "Central canal moderate/severe"), el("td", {}, ""), el("td", {}, `p=${num(cnn.binary_probability, 2)}`)));
  for (const [k, t] of FINDINGS) {
    if (rec[k]) crow.push(el("tr", {}, el("td", {}, t), el("td", {}, rec[k].label || "-"), el("td", {}, `p(moderate/severe)=${num(rec[k].probability, 2)}`)));
  }
  parts.push(el("h3", {}, "CNN probabilities"), crow.length ? el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "CNN"), el("th", {}, "Result"), el("th", {}, "Probabilities"))), el("tbody", {}, crow)))
    : el("p", { class: "note" }, "No CNN classifier output."));
  parts.push(gradesForm(rec));
  if (rec.regraded) parts.push(el("p", { class: "note" }, `Changed by ${rec.regraded.by} on ${when(rec.regraded.when)}: ${rec.regraded.source}.`));
  if ((rec.warnings || []).length) parts.push(el("h3", {}, "Warnings"), el("ul", {}, rec.warnings.map((w) => el("li", { class: "warn" }, w))));
  $("details").replaceChildren(...parts);
}

function gradesForm(rec) {
  const given = (rec.reader || {}).grades || {};
  const rows = [["central_canal", "Central canal", (rec.central_canal || {}).grade], ...FINDINGS.map(([k, t]) => [k, t, (rec[k] || {}).label])];
  const form = el("form", { id: "grades-form", class: "grades-form" });
  for (const [k, title, model] of rows) {
    const sel = el("select", { name: k, disabled: !detail.editable },
      el("option", { value: "" }, `as the models (${model || "-"})`),
      ...(detail.choices[k] || []).map((v) => el("option", { value: v, selected: given[k] === v }, v)));
    form.append(el("label", {}, title, sel));
  }
  form.append(el("button", { type: "submit", class: "primary", disabled: !detail.editable }, "Save grades"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const by = reader();
    if (!by || !confirmSigned()) return;
    const grades = {};
    for (const s of form.querySelectorAll("select")) if ((given[s.name] || "") !== s.value) grades[s.name] = s.value || null;
    if (!Object.keys(grades).length) { message("Your grades are as saved: nothing to change."); return; }
    await change(() => sendJSON(`/api/studies/${encodeURIComponent(sid)}/levels/${info(current).id}/grades`, "PUT", { by, grades }),
      "Saving the reader's grades…", `${current}: your grades are saved.`);
  });
  return el("div", {}, el("h3", {}, "Your grades"), el("p", { class: "meta" },
    "Give a grade where you disagree with the models; it is what the report, the SR and the export show."), form);
}

function renderHistory() {
  const h = detail.report.history || [];
  $("history").replaceChildren(el("h2", {}, "History"), h.length ? el("ul", {}, h.map((x) => el("li", {},
    `${when(x.when)}: ${x.level || "study"}: ${x.reason} by ${x.by}`))) : el("p", { class: "note" }, "No changes yet."));
}

// --- pictures --------------------------------------------------------------------------------

async function axialImage(sop, url) {
  if (!images.has(sop)) images.set(sop, await getArray(url, Float32Array));
  return images.get(sop);
}

async function showLevel() {
  const lv = info(current), rec = record(current);
  $("picture").hidden = true;
  $("axial").hidden = false;
  preview = null;
  $("preview-bar").hidden = true;
  if (!lv.image_url) {
    $("axial").hidden = true;
    const pic = $("picture");
    if (lv.picture_url) { pic.src = lv.picture_url; pic.hidden = false; }
    $("axial-caption").textContent = "The picture analyze drew (the images are needed to edit).";
    return;
  }
  const [img, lab] = await Promise.all([axialImage(rec.axial_sop_instance_uid, lv.image_url),
    getArray(lv.labels_url, Uint8Array)]);
  axial.load({ image: img.data, rows: img.rows, cols: img.cols, spacing: lv.spacing, labels: lab.data, edges: lv.edges });
  const sc = rec.slice_choice || {};
  $("axial-caption").textContent = `Axial slice ${rec.axial_sop_instance_uid}; chosen by ${sc.method || "-"}` +
    (sc.distance_mm !== null && sc.distance_mm !== undefined ? `, ${num(sc.distance_mm)} mm from the disc landmark` : "") +
    (rec.regions_source === "reader" ? "; facet / foramen regions drawn by the reader" : "") + ".";
}

async function loadSagittal() {
  const s = detail.sagittal;
  if (!s) {
    $("sagittal").hidden = true;
    $("sagittal-caption").textContent = detail.sagittal_note || "";
    return;
  }
  $("sagittal").hidden = false;
  const img = await getArray(s.image_url, Float32Array);
  sag.editable = detail.editable;
  sag.load({ image: img.data, rows: img.rows, cols: img.cols, view: s });
  sag.select(current);
  $("sagittal-caption").textContent = detail.editable
    ? "Drag the filled landmark to choose another axial slice for this level; it snaps to the nearest slice (dashed)."
    : "Landmarks and the lines of the chosen axial slices.";
}

async function selectLevel(level, force = false) {
  if (busy && !force) return;
  if (!force && level !== current && axial.dirty && !confirm(`Discard your unsaved edits of ${current}?`)) return;
  current = level;
  history.replaceState(null, "", `#${level.replace("/", "-")}`);
  renderSummary();
  renderDetails();
  sag.select(level);
  delete document.body.dataset.level;
  await showLevel();
  document.body.dataset.level = level; // the level whose pictures are shown (for scripts and tests)
  updateButtons();
}

// --- changes ---------------------------------------------------------------------------------

async function change(call, busyText, doneText) {
  setBusy(true, busyText);
  const before = record(current);
  try {
    const d = await call();
    await setDetail(d, current);
    message(doneText + describe(before, record(current)));
  } catch (e) {
    message(`Not saved: ${e.message}`, "error");
  } finally {
    setBusy(false);
  }
}

function describe(a, b) {
  if (!a || !b) return "";
  const out = [];
  const sa = (a.measurements || {}).dural_sac_area_mm2, sb = (b.measurements || {}).dural_sac_area_mm2;
  if (sa !== sb) out.push(`dural sac ${num(sa)} → ${num(sb)} mm²`);
  const ga = (a.central_canal || {}).grade, gb = (b.central_canal || {}).grade;
  if (ga !== gb) out.push(`central canal ${ga} → ${gb}`);
  for (const [k, t] of FINDINGS) {
    const la = (a[k] || {}).label, lb = (b[k] || {}).label;
    if (la !== lb) out.push(`${t} ${la} → ${lb}`);
  }
  return out.length ? ` (${out.join("; ")})` : "";
}

async function save() {
  const by = reader();
  if (!by || !axial.dirty || !confirmSigned()) return;
  const rec = record(current), lv = info(current);
  const regions = [3, 4, 5, 6].some((v) => axial.touched.has(v)) || rec.regions_source === "reader" ? "reader" : "recompute";
  const blob = await encodeGrayPNG(axial.labels, axial.cols, axial.rows);
  const url = `${lv.labels_url}?by=${encodeURIComponent(by)}&regions=${regions}`;
  await change(async () => (await api(url, { method: "PUT", headers: { "Content-Type": "image/png" }, body: blob })).json(),
    `Saving ${current} and regrading…`, `${current} saved and regraded`);
}

async function setDetail(d, level) {
  detail = d;
  if (!detail.levels.find((l) => l.level === level)) level = detail.levels.length ? detail.levels[0].level : null;
  current = level;
  renderHeader();
  renderHistory();
  if (!detail.editable) message(`Read only: ${detail.source.message}`, "error");
  await Promise.all([loadSagittal(), current ? selectLevel(current, true) : null]);
}

function updateButtons() {
  const editable = detail && detail.editable && !preview;
  for (const b of document.querySelectorAll("#tools button, #tools select, #tools input")) b.disabled = busy || !editable;
  $("save").disabled = busy || !editable || !axial.dirty;
  $("discard").disabled = busy || !axial.dirty;
  $("undo").disabled = busy || !editable || !axial.undoStack.length;
  $("redo").disabled = busy || !editable || !axial.redoStack.length;
  for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("active", b.dataset.tool === axial.tool);
  $("tools").hidden = !(detail && detail.editable);
}

function setTool(t) {
  axial.tool = t;
  $("axial").dataset.tool = t;
  updateButtons();
}

// --- controls --------------------------------------------------------------------------------

function buildControls() {
  const sel = $("label");
  for (const l of LABELS) sel.append(el("option", { value: l.value }, `${l.value} ${l.name}`));
  sel.addEventListener("change", () => { axial.label = Number(sel.value); });
  $("radius").addEventListener("input", (e) => { axial.radius = Number(e.target.value); axial.draw(); });
  for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => setTool(b.dataset.tool));
  $("undo").addEventListener("click", () => axial.undo());
  $("redo").addEventListener("click", () => axial.redo());
  $("save").addEventListener("click", save);
  $("discard").addEventListener("click", () => selectLevel(current, true));
  axial.onedit = updateButtons;

  const disp = $("display");
  for (const l of LABELS) {
    const cb = el("input", { type: "checkbox", checked: true, dataset: { show: l.value } });
    cb.addEventListener("change", () => axial.setShow(l.value, cb.checked));
    const sw = el("span", { class: "swatch" });
    sw.style.background = `rgb(${l.color.join(",")})`;
    disp.append(el("label", {}, cb, sw, l.name));
  }
  const fill = el("input", { type: "range", min: 0, max: 100, value: 30, id: "fill" });
  fill.addEventListener("input", () => axial.setFill(Number(fill.value) / 100));
  const ww = el("input", { type: "number", id: "ww", step: "any", title: "window width" });
  const wc = el("input", { type: "number", id: "wc", step: "any", title: "window level (centre)" });
  const apply = () => axial.setWindow(Number(ww.value), Number(wc.value));
  ww.addEventListener("change", apply);
  wc.addEventListener("change", apply);
  axial.onwindow = (w, c) => { ww.value = w.toFixed(0); wc.value = c.toFixed(0); };
  disp.append(el("label", {}, "fill ", fill), el("label", {}, "W ", ww), el("label", {}, "L ", wc),
    el("button", { type: "button", onclick: () => axial.autoWindow() }, "Auto W/L"),
    el("button", { type: "button", onclick: () => axial.resetView() }, "Zoom to masks"),
    el("button", { type: "button", onclick: () => axial.fitAll() }, "Whole slice"));

  $("reader").value = readerName();
  $("reader").addEventListener("change", () => setReaderName($("reader").value));

  sag.ondrop = async (level, point, cand) => {
    const rec = record(level);
    if (!cand) { message("No axial slice passes there: the landmark stays.", "error"); sag.select(level); return; }
    if (cand.sop_instance_uid === rec.axial_sop_instance_uid) {
      message(`${level}: that is the slice already chosen.`);
      sag.select(level);
      return;
    }
    if (axial.dirty && !confirm(`Discard your unsaved edits of ${level}?`)) { sag.select(level); return; }
    try {
      const img = await axialImage(cand.sop_instance_uid, `/api/studies/${encodeURIComponent(sid)}/axial/${encodeURIComponent(cand.sop_instance_uid)}`);
      const lv = info(level);
      axial.load({ image: img.data, rows: img.rows, cols: img.cols, spacing: lv.spacing, labels: null, edges: lv.edges });
      preview = { level, point, candidate: cand };
      $("preview-text").textContent = `Preview: axial slice ${cand.sop_instance_uid}, ${cand.distance_mm.toFixed(1)} mm from the moved landmark (not chosen yet).`;
      $("preview-bar").hidden = false;
      updateButtons();
    } catch (e) {
      message(`Cannot show that slice: ${e.message}`, "error");
    }
  };
  $("use-slice").addEventListener("click", async () => {
    const by = reader();
    if (!by || !preview || !confirmSigned()) return;
    const p = sag.toStored(preview.point), level = preview.level;
    preview = null;
    $("preview-bar").hidden = true;
    await change(() => sendJSON(`/api/studies/${encodeURIComponent(sid)}/levels/${info(level).id}/landmark`, "POST",
      { by, row: p.row, col: p.col }), `Segmenting and grading the new ${level} slice…`, `${level}: new axial slice analysed`);
  });
  $("cancel-slice").addEventListener("click", () => { sag.select(current); selectLevel(current, true); });

  $("signoff-open").addEventListener("click", () => {
    $("signoff-name").value = $("reader").value.trim() || readerName();
    $("signoff-dialog").showModal();
  });
  $("signoff-cancel").addEventListener("click", () => $("signoff-dialog").close());
  $("signoff-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const by = $("signoff-name").value.trim();
    if (!by) return;
    $("reader").value = by;
    setReaderName(by);
    $("signoff-dialog").close();
    await change(() => sendJSON(`/api/studies/${encodeURIComponent(sid)}/signoff`, "POST",
      { by, organization: $("signoff-org").value.trim() }), "Signing…", `Signed by ${by}; a new, verified SR was written`);
  });

  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, select, textarea, dialog")) return;
    const k = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && k === "z") { e.shiftKey ? axial.redo() : axial.undo(); e.preventDefault(); return; }
    if ((e.ctrlKey || e.metaKey) && k === "y") { axial.redo(); e.preventDefault(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey || !detail || !detail.editable) return;
    if (k === "b") setTool("brush");
    else if (k === "e") setTool("eraser");
    else if (k === "v") setTool("view");
    else if (k >= "1" && k <= "6") { $("label").value = k; axial.label = Number(k); axial.draw(); }
    else if (k === "[" || k === "]") {
      axial.radius = Math.min(20, Math.max(1, axial.radius + (k === "]" ? 1 : -1)));
      $("radius").value = axial.radius;
      axial.draw();
    }
  });
  window.addEventListener("beforeunload", (e) => { if (axial.dirty) { e.preventDefault(); e.returnValue = ""; } });
}

async function main() {
  buildControls();
  setTool("view");
  try {
    const d = await getJSON(`/api/studies/${encodeURIComponent(sid)}`);
    const fromHash = location.hash.slice(1).replace("-", "/");
    const first = d.levels.find((l) => l.level === fromHash) ? fromHash : (d.levels[0] || {}).level;
    await setDetail(d, first);
    document.body.dataset.ready = "1";
  } catch (e) {
    message(`Cannot open this study: ${e.message}`, "error");
  }
}

main();
