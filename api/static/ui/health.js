// The operators' health page: GET /health/debug, drawn so that what is wrong is seen at a
// glance. Every component with a status pill and its latency, the verdict, and every
// process (API, workers, dispatchers: alive, and those that stopped or fell silent in the
// last hour) with its version, concurrency, running jobs and secret fingerprints; a
// process gone, or whose version or fingerprint differs from the others', is marked.
// Signed in with the debug token (X-Debug-Token), or an operator tenant's admin key.

import { ApiError, describe, session } from "./api.js";
import { field, h, pill, replace, section, table, when } from "./dom.js";

const SLOW_MS = 1000;

function tokenForm(onToken, error) {
  const input = h("input", { type: "password", id: "debug-token", autocomplete: "off", required: true });
  return h("form", {
    class: "card narrow",
    onsubmit: (e) => {
      e.preventDefault();
      onToken(input.value.trim());
    },
  },
    h("h1", {}, "Health"),
    h("p", {}, "For operators: the deployment's debug token (CREWQ_DEBUG_TOKEN)."),
    field("Debug token", input),
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Open health page"),
      session.key() ? h("button", { type: "button", class: "secondary", onclick: () => onToken(null) },
        "Use my API key (operator admin)") : null),
    h("p", { class: "error", role: "alert" }, error ?? ""));
}

function latency(ms) {
  return h("span", { class: `badge${ms >= SLOW_MS ? " badge-slow" : ""}` }, `${ms} ms`);
}

function components(report) {
  return table("Components", ["Component", "Status", "Latency", "Checked", "Error"],
    Object.entries(report.components).map(([name, c]) => h("tr",
      { "data-testid": "component", "data-name": name, "data-status": c.status, class: `row-${c.status}` },
      h("th", { scope: "row" }, name),
      h("td", {}, pill(c.status)),
      h("td", {}, latency(c.latency_ms)),
      h("td", {}, c.checks.join(", ") || "—"),
      h("td", { class: "wrap" }, c.error ?? ""))));
}

// Every process the report names, one row each: the API answering, then workers and
// dispatchers, alive first.
function processes(report) {
  const parts = report.components;
  const rows = [];
  const api = (parts.config?.details?.processes ?? []).find((p) => p.process.startsWith("api "));
  if (api) {
    rows.push({ role: "api", id: api.process.slice(4), host: api.host, version: report.environment.version,
      state: "alive", fingerprints: api.fingerprints, concurrency: null, running: null, last_seen_at: null });
  }
  const add = (role, details, key) => {
    for (const p of details?.[key] ?? []) rows.push({ role, ...p });
    for (const p of details?.gone ?? []) rows.push({ role, ...p });
  };
  add("worker", parts.workers?.details, "workers");
  add("dispatcher", parts.dispatcher?.details, "dispatchers");
  return rows;
}

// The value most live processes have; any other stands out.
function usual(values) {
  const counts = new Map();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best = null;
  for (const [v, n] of counts) if (best === null || n > counts.get(best)) best = v;
  return { value: best, split: counts.size > 1 };
}

// The secrets a process has set, each by its fingerprint; those it lacks are counted.
function fingerprintList(prints, odd) {
  const set = Object.entries(prints).filter(([, v]) => v !== "unset");
  const unset = Object.keys(prints).length - set.length;
  return h("ul", { class: "prints" },
    set.map(([n, v]) => {
      const differs = odd.includes(n);
      return h("li", { class: differs ? "mismatch" : "" }, `${n}: `, h("code", {}, v), differs ? " (differs)" : "");
    }),
    unset ? h("li", { class: "hint" }, `${unset} unset`) : null);
}

function processTable(rows) {
  const alive = rows.filter((r) => r.state === "alive");
  const version = usual(alive.map((r) => r.version));
  const names = [...new Set(alive.flatMap((r) => Object.keys(r.fingerprints ?? {})))].sort();
  const prints = Object.fromEntries(names.map((n) => [n,
    usual(alive.filter((r) => r.fingerprints?.[n] !== undefined).map((r) => r.fingerprints[n]))]));
  return table("Processes", ["Role", "Process", "State", "Version", "Concurrency", "Running", "Last seen", "Fingerprints"],
    rows.map((r) => {
      const odd = r.state === "alive" && names.filter((n) => prints[n].split
        && r.fingerprints?.[n] !== undefined && r.fingerprints[n] !== prints[n].value);
      const oddVersion = r.state === "alive" && version.split && r.version !== version.value;
      const flagged = r.state !== "alive" || (odd && odd.length) || oddVersion;
      return h("tr", {
        "data-testid": "process-row", "data-role": r.role, "data-state": r.state,
        "data-pid": r.pid ?? "", class: `row-${r.state}${flagged ? " row-flagged" : ""}`,
      },
        h("td", {}, r.role),
        h("td", { class: "wrap" }, h("code", {}, r.id), r.pid ? h("small", { class: "hint" }, ` ${r.host} pid ${r.pid}`) : null),
        h("td", {}, pill(r.state, "process-state")),
        h("td", { class: oddVersion ? "mismatch" : "" }, r.version, oddVersion ? " (differs)" : ""),
        h("td", {}, r.concurrency ?? "—"),
        h("td", {}, r.running ?? "—"),
        h("td", {}, when(r.last_seen_at)),
        h("td", {}, fingerprintList(r.fingerprints ?? {}, odd || [])));
    }));
}

function draw(box, report, again) {
  const env = report.environment;
  replace(box,
    h("h1", {}, "Health"),
    h("div", { class: `verdict verdict-${report.status}`, "data-testid": "verdict" },
      h("span", {}, "Verdict "), pill(report.status),
      h("span", {}, ` in ${report.duration_ms} ms · version ${env.version} · ${env.environment} · host ${env.host}`),
      h("button", { type: "button", class: "secondary", onclick: again }, "Check again")),
    section("Components", components(report)),
    section("Processes", processTable(processes(report))),
    section("Environment", h("dl", { class: "facts" },
      Object.entries(env).map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]))));
}

export async function render(main) {
  const box = h("div");
  main.append(box);

  async function check(token, fromForm) {
    const headers = token ? { "X-Debug-Token": token } : {};
    replace(box, h("h1", {}, "Health"), h("p", { "aria-busy": "true" }, "Checking every component…"));
    let report;
    try {
      // A failing verdict answers 503 with the report: read it either way.
      const response = await fetch("/health/debug", {
        headers: { ...(token ? {} : { Authorization: `Bearer ${session.key()}` }), ...headers },
      });
      if (response.status === 404) throw new ApiError(404, "NOT_ADMITTED", "not admitted: the token (or key) does not open the health page");
      if (!response.ok && response.status !== 503) throw new ApiError(response.status, `HTTP_${response.status}`, response.statusText);
      report = await response.json();
    } catch (err) {
      if (token && !fromForm) session.setToken("");
      replace(box, tokenForm((t) => check(t, true), describe(err)));
      return;
    }
    if (token) session.setToken(token);
    draw(box, report, () => check(token, false));
    box.querySelector("h1").focus?.();
  }

  const saved = session.token();
  if (saved) await check(saved, false);
  else replace(box, tokenForm((t) => check(t, true)));
  box.querySelector("input")?.focus();
}
