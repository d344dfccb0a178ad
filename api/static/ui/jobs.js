// Jobs: the newest jobs, filtered by status and crew, kept up to date live from the tenant's
// event stream (/v1/stream, stream.js): each job's status and progress change in place and a
// job that starts is added at the top. While the socket is down (and the page visible) the
// list is read again every few seconds instead. And the form that submits a new job.

import { api, describe } from "./api.js";
import { field, h, notify, pill, replace, section, table, when } from "./dom.js";
import { followTenant } from "./stream.js";

const STATUSES = [
  "pending", "running", "awaiting_input", "scheduled", "completed", "failed", "cancelled", "expired",
];
const REFRESH_MS = 2000;
// What the list shows: a job's moves (each carries its state) and its tasks' progress. The
// stream's other steps (tools, model calls) are left on the server.
const LIVE_TYPES = [
  "job.started", "job.completed", "job.failed", "job.cancelled", "job.retrying",
  "job.input_required", "job.input_received", "job.resumed", "job.expired",
  "task.started", "task.completed",
];

function row(job) {
  const progress = job.progress
    ? `${job.progress.completed_tasks}/${job.progress.total_tasks}`
    : "—";
  return h(
    "tr",
    { "data-testid": "job-row", "data-status": job.status, "data-job": job.id },
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
          error.textContent = describe(err);
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

// A task's event moves the job's progress as the worker moves it (worker/steps.py).
function progressed(job, event) {
  const was = job.progress || { completed_tasks: 0, total_tasks: 0, current_task: null };
  const d = event.data;
  if (event.type === "task.started") {
    return { ...was, total_tasks: d.total_tasks, current_task: d.task };
  }
  if (event.type === "task.completed") {
    const done = was.completed_tasks + 1;
    return { ...was, completed_tasks: was.total_tasks ? Math.min(done, was.total_tasks) : done, current_task: null };
  }
  if (event.type === "job.resumed") return { ...was, completed_tasks: d.tasks_done };
  return was;
}

function liveState(el, state) {
  el.dataset.state = state;
  el.textContent = state === "live" ? "Live" : state === "down" ? "Reconnecting · polling" : "Connecting";
  el.title = state === "live"
    ? "Updated as events happen"
    : `Read again every ${REFRESH_MS / 1000} s until the live stream is back`;
}

export async function render(main, ctx) {
  const crews = (await api("GET", "/v1/crews")).data;
  const status = h("select", { id: "filter-status" },
    h("option", { value: "" }, "Any status"), STATUSES.map((s) => h("option", { value: s }, s)));
  const crew = h("select", { id: "filter-crew" },
    h("option", { value: "" }, "Any crew"), crews.map((c) => h("option", { value: c.name }, c.name)));
  const list = h("div", { "aria-live": "polite", "aria-busy": "true" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const live = h("span", { class: "live-state", "data-testid": "live" });
  liveState(live, "connecting");
  let cursor = null;
  let shown = [];
  let isLive = false;
  // Events that arrive while a read is under way wait for it: the read's answer would
  // otherwise undo what they changed.
  let loading = 0;
  let held = [];

  function draw() {
    replace(list, shown.length
      ? table("Jobs, newest first", ["Job", "Crew", "Status", "Tasks", "Attempt", "Created"],
          shown.map(row), { "data-testid": "jobs" })
      : h("p", {}, "No job matches."));
    list.setAttribute("aria-busy", "false");
  }

  async function load(append = false) {
    const query = new URLSearchParams({ limit: "25" });
    if (status.value) query.set("status", status.value);
    if (crew.value) query.set("crew", crew.value);
    if (append && cursor) query.set("cursor", cursor);
    loading += 1;
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
    } catch (err) {
      notify(describe(err), "error");
    } finally {
      loading -= 1;
    }
    if (!loading) {
      const waiting = held;
      held = [];
      waiting.forEach(apply);
    }
    draw();
  }

  // A job's new state: changed in place, dropped when it no longer matches the filters,
  // added in its place (newest first) when it does and is not shown yet.
  function upsert(state) {
    const at = shown.findIndex((j) => j.id === state.id);
    const wanted = (!status.value || state.status === status.value)
      && (!crew.value || state.crew === crew.value);
    if (at >= 0) {
      if (wanted) shown[at] = { ...shown[at], ...state };
      else shown.splice(at, 1);
      return;
    }
    if (!wanted) return;
    const made = Date.parse(state.created_at);
    let to = shown.findIndex((j) => Date.parse(j.created_at) < made);
    if (to < 0) {
      if (!more.hidden) return; // older than what is loaded: it belongs on a later page
      to = shown.length;
    }
    shown.splice(to, 0, state);
  }

  function apply(event) {
    if (loading) {
      held.push(event);
      return;
    }
    if (event.data && event.data.object === "job") upsert(event.data);
    else {
      const job = shown.find((j) => j.id === event.data?.job_id);
      if (!job) return;
      job.progress = progressed(job, event);
    }
  }

  let stopStream = null;
  function follow() {
    if (stopStream) stopStream();
    isLive = false;
    const query = new URLSearchParams({ types: LIVE_TYPES.join(",") });
    if (crew.value) query.set("crew", crew.value);
    stopStream = followTenant(query, {
      onEvent: (event) => {
        apply(event);
        if (!loading) draw();
      },
      onState: (state, { resumed = false } = {}) => {
        isLive = state === "live";
        liveState(live, state);
        // Not resumed: what happened before it opened is read afresh.
        if (isLive && !resumed) load();
      },
    });
  }

  const reset = () => {
    shown = [];
    cursor = null;
    load();
  };
  status.addEventListener("change", reset);
  // The stream filters by crew itself: a new crew is a new stream.
  crew.addEventListener("change", () => {
    reset();
    follow();
  });
  more.addEventListener("click", () => load(true));

  const canWrite = ctx.me.scopes.includes("jobs:write") || ctx.me.scopes.includes("admin");
  main.append(
    h("h1", {}, "Jobs"),
    canWrite ? h("details", { class: "new-job" }, h("summary", {}, "New job"), newJobForm(crews, ctx)) : null,
    section("Recent jobs",
      h("div", { class: "filters", role: "group", "aria-label": "Filters" },
        field("Status", status), field("Crew", crew), live),
      list, more),
  );
  await load();
  follow();
  const timer = setInterval(() => {
    if (!isLive && !document.hidden) load();
  }, REFRESH_MS);
  return () => {
    clearInterval(timer);
    if (stopStream) stopStream();
  };
}
