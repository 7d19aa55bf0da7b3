// The worklist: every study under ROOT with its status, grades and flags; filter and sort.
import { el, getJSON, GRADE_CLASS, readerName, setReaderName, when } from "/static/common.js";

const $ = (id) => document.getElementById(id);
const GRADES = ["normal", "mild", "moderate", "severe"];
const STATUS_ORDER = { new: 0, "in review": 1, signed: 2 };
let studies = [];
let sort = null; // {key, dir}

function worst(s) {
  return Math.max(-1, ...s.levels.map((l) => GRADES.indexOf(l.central_canal)));
}

function lateral(s) {
  return s.levels.reduce((n, l) => n + l.lateral_moderate_severe.length, 0);
}

function patientText(s) {
  const p = s.patient || {};
  return [(p.PatientName || "").replace(/\^/g, " ").trim(), p.PatientID, p.AccessionNumber].filter(Boolean).join(" · ");
}

const KEYS = {
  status: (s) => STATUS_ORDER[s.status],
  needs_review: (s) => s.needs_review,
  warnings: (s) => s.warnings,
  patient: (s) => patientText(s) || s.id,
  date: (s) => (s.patient || {}).StudyDate || "",
  worst: worst,
  lateral: lateral,
  change: (s) => (s.last_change || {}).when || "",
};

// Default order: needs review, then warnings, then status (new first), then date.
function defaultOrder(a, b) {
  return (b.needs_review - a.needs_review) || (b.warnings > 0) - (a.warnings > 0) ||
    (STATUS_ORDER[a.status] - STATUS_ORDER[b.status]) || String(KEYS.date(b)).localeCompare(KEYS.date(a)) ||
    a.id.localeCompare(b.id);
}

function render() {
  const q = $("filter").value.trim().toLowerCase();
  const st = $("status-filter").value;
  const flagged = $("flagged-only").checked;
  let rows = studies.filter((s) => (!st || s.status === st) && (!flagged || s.needs_review > 0) &&
    (!q || `${patientText(s)} ${s.id} ${s.study_instance_uid}`.toLowerCase().includes(q)));
  rows = rows.slice().sort((a, b) => {
    if (!sort) return defaultOrder(a, b);
    const ka = KEYS[sort.key](a), kb = KEYS[sort.key](b);
    const c = typeof ka === "number" ? ka - kb : String(ka).localeCompare(String(kb));
    return (c || defaultOrder(a, b)) * (c ? sort.dir : 1);
  });
  const body = rows.map((s) => {
    const href = `/study/${encodeURIComponent(s.id)}`;
    const reasons = Object.entries(s.needs_review_reasons || {}).map(([k, v]) => `${k}: ${v.join("; ")}`).join("\n");
    const change = s.signed ? `signed by ${s.signed.by}, ${when(s.signed.when)}`
      : s.last_change ? `${s.last_change.reason} (${s.last_change.by}, ${when(s.last_change.when)})` : "";
    return el("tr", { class: `s-${s.status.replace(" ", "-")}`, dataset: { id: s.id }, onclick: (e) => {
      if (!e.target.closest("a")) location.href = href;
    } },
      el("td", {}, el("span", { class: `badge s-${s.status.replace(" ", "-")}` }, s.status)),
      el("td", {}, s.needs_review ? el("span", { class: "tag warn", title: reasons }, `${s.needs_review}`) : ""),
      el("td", {}, s.warnings ? String(s.warnings) : ""),
      el("td", {}, el("a", { href, title: `StudyInstanceUID ${s.study_instance_uid}` }, patientText(s) || s.id)),
      el("td", {}, (s.patient || {}).StudyDate || ""),
      el("td", { class: "levels" }, s.levels.map((l) => el("span", {
        class: `lv ${GRADE_CLASS[l.central_canal] || ""}${l.changed ? " changed" : ""}`,
        title: `${l.level}: ${l.central_canal || "-"}${l.by_reader ? " (reader)" : ""}${l.changed ? ", changed" : ""}` },
      `${l.level.split("/")[0]} ${(l.central_canal || "-").slice(0, 3)}`))),
      el("td", {}, String(lateral(s) || "")),
      el("td", { class: "meta" }, change));
  });
  $("worklist").tBodies[0].replaceChildren(...body);
  if (!rows.length) $("worklist").tBodies[0].append(el("tr", {}, el("td", { colspan: 8, class: "note" },
    studies.length ? "No study matches." : "No analyze outputs in this folder.")));
}

async function main() {
  $("reader").value = readerName();
  $("reader").addEventListener("change", () => setReaderName($("reader").value));
  for (const id of ["filter", "status-filter", "flagged-only"]) $(id).addEventListener("input", render);
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      sort = sort && sort.key === key ? (sort.dir === 1 ? { key, dir: -1 } : null) : { key, dir: 1 };
      for (const t of document.querySelectorAll("th[data-sort]")) t.removeAttribute("aria-sort");
      if (sort) th.setAttribute("aria-sort", sort.dir === 1 ? "ascending" : "descending");
      render();
    });
  }
  $("export-signed").addEventListener("change", (e) => {
    $("export").href = e.target.checked ? "/api/export.zip?signed=1" : "/api/export.zip";
  });
  try {
    const d = await getJSON("/api/studies");
    studies = d.studies;
    $("root").textContent = `${studies.length} studies in ${d.root}`;
    render();
    document.body.dataset.ready = "1";
  } catch (e) {
    $("messages").replaceChildren(el("p", { class: "msg error" }, `Cannot list the studies: ${e.message}`));
  }
}

main();
