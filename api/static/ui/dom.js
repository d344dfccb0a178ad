// Building the page from data without innerHTML: text is always set as text, so nothing a
// job, a crew or a receiver returned can become markup (and the CSP forbids inline code).

import { describe } from "./api.js";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name in el && typeof value !== "string") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : value);
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A status as a pill: its text is the status, its colour a class (never colour alone).
export function pill(status, testid) {
  return h("span", { class: `pill pill-${status}`, "data-testid": testid }, status);
}

export function when(iso) {
  if (!iso) return "—";
  const at = new Date(iso);
  return h("time", { datetime: iso, title: at.toISOString() }, at.toLocaleString());
}

export function money(usd) {
  return usd ? `$${Number(usd).toFixed(usd < 0.01 ? 6 : 4)}` : "$0";
}

export function table(caption, headings, rows, attrs = {}) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      attrs,
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows),
    ),
  );
}

export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    hint ? h("small", { class: "hint" }, hint) : null,
  );
}

let noticeTimer = 0;
export function notify(text, kind = "info") {
  const box = document.getElementById("notice");
  box.className = `notice notice-${kind}`;
  box.textContent = text;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    box.textContent = "";
    box.className = "notice";
  }, 8000);
}

// A list's button action: run it, then `reload` the list; a failure goes to the notice,
// named by the button's label.
export function acting(reload) {
  return async (label, run) => {
    try {
      await run();
      await reload();
    } catch (err) {
      notify(`${label}: ${describe(err)}`, "error");
    }
  };
}

export function section(title, ...children) {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), children);
}
