// Jobs: the newest jobs, filtered by status and crew, refreshed every few seconds while the
// page is visible; and the form that submits a new one.

import { api, ApiError } from "./api.js";
import { field, h, notify, pill, replace, section, table, when } from "./dom.js";

const STATUSES = [
  "pending", "running", "awaiting_input", "scheduled", "completed", "failed", "cancelled", "expired",
];
const REFRESH_MS = 2000;

function row(job) {
  const progress = job.progress
    ? `${job.progress.completed_tasks}/${job.progress.total_tasks}`
    : "—";
  return h(
    "tr",
    { "data-testid": "job-row", "data-status": job.status },
    h("td", {}, h("a", { href: `/ui/jobs/${job.id}`, "data-route": true }, h("code", {}, job.id))),
    h("td", {}, job.crew),
    h("td", {}, pill(job.status)),
    h("td", {}, progress),
    h("td", {}, job.attempt),
    h("td", {}, when(job.created_at)),
  );
}

function inputsFor(crew, box) {
  replace(
    box,
    crew.inputs.map((name) =>
      field(name, h("input", { type: "text", name: `input:${name}`, required: true })),
    ),
  );
}

function newJobForm(crews, ctx) {
  const crewSelect = h("select", { name: "crew", id: "new-crew", required: true },
    crews.map((c) => h("option", { value: c.name }, c.name)));
  const inputs = h("div", { class: "inputs" });
  const extra = h("textarea", { name: "extra", rows: 3, placeholder: '{"key": "value"}' });
  const webhook = h("input", { type: "url", name: "webhook_url", placeholder: "https://…" });
  const timeout = h("input", { type: "number", name: "timeout", min: 1 });
  const retries = h("input", { type: "number", name: "max_retries", min: 0 });
  const error = h("p", { class: "error", role: "alert" });
  const pick = () => {
    const crew = crews.find((c) => c.name === crewSelect.value);
    if (crew) inputsFor(crew, inputs);
  };
  crewSelect.addEventListener("change", pick);
  pick();
  const form = h(
    "form",
    {
      class: "card",
      "aria-label": "New job",
      onsubmit: async (e) => {
        e.preventDefault();
        error.textContent = "";
        const body = { crew: crewSelect.value, inputs: {} };
        try {
          if (extra.value.trim()) Object.assign(body.inputs, JSON.parse(extra.value));
        } catch (err) {
          error.textContent = `Inputs as JSON: ${err.message}`;
          extra.focus();
          return;
        }
        for (const input of inputs.querySelectorAll("input")) {
          body.inputs[input.name.slice("input:".length)] = input.value;
        }
        if (webhook.value) body.webhook_url = webhook.value;
        if (timeout.value) body.timeout = Number(timeout.value);
        if (retries.value) body.max_retries = Number(retries.value);
        try {
          const job = await api("POST", "/v1/jobs", body);
          notify(`Job ${job.id} submitted`);
          ctx.navigate(`/ui/jobs/${job.id}`);
        } catch (err) {
          error.textContent = err instanceof ApiError ? err.describe() : String(err);
        }
      },
    },
    field("Crew", crewSelect),
    inputs,
    field("Inputs as JSON", extra, "Optional; merged with the fields above."),
    h("details", {},
      h("summary", {}, "Options"),
      field("Webhook URL", webhook, "Receives the job's outcome, signed."),
      field("Timeout (seconds)", timeout),
      field("Max retries", retries),
    ),
    h("button", { type: "submit" }, "Submit job"),
    error,
  );
  return form;
}

export async function render(main, ctx) {
  const crews = (await api("GET", "/v1/crews")).data;
  const status = h("select", { id: "filter-status" },
    h("option", { value: "" }, "Any status"), STATUSES.map((s) => h("option", { value: s }, s)));
  const crew = h("select", { id: "filter-crew" },
    h("option", { value: "" }, "Any crew"), crews.map((c) => h("option", { value: c.name }, c.name)));
  const list = h("div", { "aria-live": "polite", "aria-busy": "true" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  let cursor = null;
  let shown = [];

  async function load(append = false) {
    const query = new URLSearchParams({ limit: "25" });
    if (status.value) query.set("status", status.value);
    if (crew.value) query.set("crew", crew.value);
    if (append && cursor) query.set("cursor", cursor);
    try {
      const page = await api("GET", `/v1/jobs?${query}`);
      const first = append || shown.length <= page.data.length;
      if (append) shown = shown.concat(page.data);
      else {
        // A refresh keeps the older pages already loaded, updated where they overlap.
        const fresh = new Set(page.data.map((j) => j.id));
        shown = page.data.concat(shown.slice(page.data.length).filter((j) => !fresh.has(j.id)));
      }
      if (first) {
        cursor = page.next_cursor;
        more.hidden = !page.has_more;
      }
      replace(list, shown.length
        ? table("Jobs, newest first", ["Job", "Crew", "Status", "Tasks", "Attempt", "Created"],
            shown.map(row), { "data-testid": "jobs" })
        : h("p", {}, "No job matches."));
      list.setAttribute("aria-busy", "false");
    } catch (err) {
      notify(err.describe ? err.describe() : String(err), "error");
    }
  }
  const reset = () => {
    shown = [];
    cursor = null;
    load();
  };
  status.addEventListener("change", reset);
  crew.addEventListener("change", reset);
  more.addEventListener("click", () => load(true));

  const canWrite = ctx.me.scopes.includes("jobs:write") || ctx.me.scopes.includes("admin");
  main.append(
    h("h1", {}, "Jobs"),
    canWrite ? h("details", { class: "new-job" }, h("summary", {}, "New job"), newJobForm(crews, ctx)) : null,
    section("Recent jobs",
      h("div", { class: "filters", role: "group", "aria-label": "Filters" },
        field("Status", status), field("Crew", crew)),
      list, more),
  );
  await load();
  const timer = setInterval(() => {
    if (!document.hidden) load();
  }, REFRESH_MS);
  return () => clearInterval(timer);
}
