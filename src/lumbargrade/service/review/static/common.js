// Shared helpers of the review pages: requests, small DOM builder, formatting, the reader's name.

export async function api(path, opts = {}) {
  const r = await fetch(path, { credentials: "same-origin", ...opts });
  if (!r.ok) {
    let msg = "";
    try { msg = (await r.clone().json()).error; } catch (e) { msg = await r.text(); }
    const err = new Error(msg || `${r.status} ${r.statusText}`);
    err.status = r.status;
    throw err;
  }
  return r;
}

export async function getJSON(path) {
  return (await api(path)).json();
}

export async function sendJSON(path, method, body) {
  const r = await api(path, {
    method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  return r.json();
}

// A binary array answer (X-Rows / X-Columns headers): {data, rows, cols}.
export async function getArray(path, Type) {
  const r = await api(path);
  const buf = await r.arrayBuffer();
  return { data: new Type(buf), rows: Number(r.headers.get("X-Rows")), cols: Number(r.headers.get("X-Columns")) };
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export const GRADE_CLASS = {
  normal: "g0", mild: "g1", moderate: "g2", severe: "g3", "normal/mild": "g0", "moderate/severe": "g3",
};

export function num(v, digits = 3) {
  if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "-";
  if (typeof v !== "number") return String(v);
  return Math.abs(v) < 1 ? v.toPrecision(digits) : v.toFixed(Math.max(digits - 1, 1));
}

export function readerName() {
  return (localStorage.getItem("lumbargrade.reader") || "").trim();
}

export function setReaderName(name) {
  localStorage.setItem("lumbargrade.reader", (name || "").trim());
}

export function when(iso) {
  if (!iso) return "";
  return iso.replace("T", " ").replace("+00:00", " UTC");
}
