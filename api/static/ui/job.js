// One job: its status and progress, its steps as they happen (the job's server-sent
// events), tokens and cost, attempts, result, the webhooks it owed with each attempt and a
// retry button, and the form that answers a job waiting for a person.

import { api, describe } from "./api.js";
import { h, money, notify, pill, replace, section, table, when } from "./dom.js";
import { follow } from "./sse.js";

const LIVE = new Set(["pending", "running", "scheduled", "awaiting_input"]);

function stepText(event) {
  const d = event.data || {};
  switch (event.type) {
    case "task.completed":
      return `task ${d.task?.name ?? ""} completed`;
    case "tool.completed":
      return `tool ${d.tool} used${d.task ? ` in ${d.task}` : ""}`;
    case "task.started":
      return `task ${d.index}/${d.total_tasks} ${d.task} started${d.agent ? ` (${d.agent})` : ""}`;
    case "llm.completed":
      return `model ${d.model} answered: ${d.prompt_tokens} + ${d.completion_tokens} tokens, ${d.duration_ms} ms`;
    case "llm.throttled":
      return `model ${d.model} waited ${d.waited_ms} ms for its limit`;
    case "job.resumed":
      return `resumed after ${d.after_task}`;
    case "job.input_required":
      return `waiting for input on ${d.input_request?.task ?? "a task"}`;
    case "job.failed":
      return `failed: ${d.error?.code ?? ""} ${d.error?.message ?? ""}`;
    default:
      return event.type.replace(".", " ");
  }
}

function step(event) {
  let data = {};
  try {
    data = JSON.parse(event.data).data;
  } catch {
    // a comment or a malformed line: shown by its type only
  }
  return h(
    "li",
    { "data-testid": "step", "data-type": event.type },
    h("span", { class: "step-type" }, event.type),
    " ",
    stepText({ type: event.type, data }),
  );
}

// " of <budget>" beside what a job spent, when its budget bounds that measure.
function limit(max, show = String) {
  return max === null || max === undefined ? "" : ` of ${show(max)} budget`;
}

function summary(job) {
  const usage = job.usage || {};
  const budget = job.budget || {};
  const progress = job.progress;
  return h(
    "dl",
    { class: "facts" },
    h("dt", {}, "Status"), h("dd", {}, pill(job.status, "job-status")),
    h("dt", {}, "Crew"), h("dd", {}, job.crew),
    h("dt", {}, "Progress"),
    h("dd", {},
      progress
        ? [h("progress", { value: progress.completed_tasks, max: progress.total_tasks,
            "aria-label": "Tasks done" }),
           ` ${progress.completed_tasks} of ${progress.total_tasks} tasks`,
           progress.current_task ? ` · now: ${progress.current_task}` : ""]
        : "not started"),
    h("dt", {}, "Tokens"), h("dd", { "data-testid": "tokens" }, String(usage.total_tokens ?? 0), limit(budget.max_tokens)),
    h("dt", {}, "Cost"), h("dd", {}, money(usage.cost_usd), limit(budget.max_cost_usd, money)),
    h("dt", {}, "LLM calls"), h("dd", {}, String(usage.llm_calls ?? 0), limit(budget.max_llm_calls)),
    h("dt", {}, "Attempt"), h("dd", {}, `${job.attempt} of ${job.max_retries + 1}`),
    h("dt", {}, "Created"), h("dd", {}, when(job.created_at)),
    h("dt", {}, "Finished"), h("dd", {}, when(job.finished_at)),
    job.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, `${job.error.code}: ${job.error.message}`)] : null,
  );
}

function attempts(job) {
  if (!job.attempts.length) return h("p", {}, "No attempt yet.");
  return table("Attempts", ["#", "Worker", "Started", "Finished", "Outcome", "Resumed after"],
    job.attempts.map((a) => h("tr", {},
      h("td", {}, a.number),
      h("td", {}, a.worker_id ?? "—"),
      h("td", {}, when(a.started_at)),
      h("td", {}, when(a.finished_at)),
      h("td", {}, a.outcome ? pill(a.outcome) : "running", a.error ? ` ${a.error.code}` : ""),
      h("td", {}, a.resumed_from ?? "—"),
    )));
}

function result(job) {
  if (!job.result) return h("p", {}, "No result yet.");
  return [
    h("pre", { class: "result", "data-testid": "result" }, job.result.raw),
    job.result.tasks.length > 1
      ? h("ol", { class: "tasks" }, job.result.tasks.map((t) =>
          h("li", {}, h("strong", {}, t.name ?? "task"), h("pre", {}, t.raw))))
      : null,
  ];
}

export async function render(main, ctx) {
  const id = ctx.id;
  const abort = new AbortController();
  const head = h("div");
  const waiting = h("div");
  const steps = h("ol", { class: "steps", "data-testid": "steps", "aria-live": "polite" });
  const streamState = h("p", { class: "hint", "data-testid": "stream-state" }, "connecting…");
  const attemptsBox = h("div");
  const resultBox = h("div");
  const deliveriesBox = h("div");
  let job = null;
  let refreshing = null;
  let deliveryTimer = 0;

  async function refresh() {
    try {
      job = await api("GET", `/v1/jobs/${id}`);
    } catch (err) {
      notify(err.describe(), "error");
      return;
    }
    replace(head, summary(job), actions(job));
    replace(waiting, job.status === "awaiting_input" && job.input_request ? inputForm(job) : null);
    replace(attemptsBox, attempts(job));
    replace(resultBox, result(job));
  }
  // Many events arrive together: one refresh of the job answers all of them.
  function soon() {
    if (!refreshing) {
      refreshing = setTimeout(async () => {
        refreshing = null;
        await refresh();
        await loadDeliveries();
      }, 150);
    }
  }

  function actions(job) {
    const buttons = [];
    const act = async (path, body, done) => {
      try {
        await api("POST", path, body);
        notify(done);
        await refresh();
        if (!abort.signal.aborted) stream();
      } catch (err) {
        notify(err.describe(), "error");
      }
    };
    if (LIVE.has(job.status)) {
      buttons.push(h("button", { type: "button", class: "danger",
        onclick: () => act(`/v1/jobs/${id}/cancel`, undefined, "Cancel requested") }, "Cancel job"));
    }
    if (job.status === "failed" || job.status === "cancelled") {
      buttons.push(h("button", { type: "button",
        onclick: () => act(`/v1/jobs/${id}/retry`, undefined, "Job retried") }, "Retry job"));
    }
    return buttons.length ? h("div", { class: "actions" }, buttons) : null;
  }

  function inputForm(job) {
    const ask = job.input_request;
    const feedback = h("textarea", { id: "input-feedback", rows: 3, maxlength: 10000 });
    const error = h("p", { class: "error", role: "alert" });
    const answer = async (approve) => {
      try {
        await api("POST", `/v1/jobs/${id}/input`, { approve, feedback: feedback.value });
        notify(approve ? "Approved: the crew goes on" : "Sent back with your feedback");
        await refresh();
        stream();
      } catch (err) {
        error.textContent = describe(err);
      }
    };
    return h("section", { class: "card attention", "aria-labelledby": "ask-h", "data-testid": "input-request" },
      h("h2", { id: "ask-h" }, "Input requested"),
      h("p", {}, h("strong", {}, ask.prompt)),
      h("p", {}, `Task ${ask.task_index}: ${ask.task}. Without an answer by `, when(ask.expires_at),
        `, the job will ${ask.default_action}.`),
      h("pre", { class: "result" }, ask.output),
      h("div", { class: "field" }, h("label", { for: "input-feedback" }, "Feedback"), feedback),
      h("div", { class: "actions" },
        h("button", { type: "button", onclick: () => answer(true) }, "Approve"),
        h("button", { type: "button", class: "secondary", onclick: () => answer(false) }, "Reject with feedback")),
      error);
  }

  function delivery(d) {
    const retry = d.status === "pending" ? null : h("button", {
      type: "button",
      class: "secondary",
      onclick: async () => {
        try {
          await api("POST", `/v1/deliveries/${d.id}/retry`);
          notify("Delivery queued again");
          await loadDeliveries();
        } catch (err) {
          notify(err.describe(), "error");
        }
      },
    }, "Retry delivery");
    return h("tr", { "data-testid": "delivery", "data-status": d.status },
      h("td", {}, d.event_type),
      h("td", { class: "wrap" }, d.url ?? (d.endpoint_id ? `endpoint ${d.endpoint_id}` : "job's webhook_url")),
      h("td", {}, pill(d.status)),
      h("td", {}, h("ol", { class: "attempts", "data-testid": "delivery-attempts" },
        d.attempts.map((a) => h("li", {}, `#${a.number} `, when(a.attempted_at), ` · `,
          a.status_code ? `HTTP ${a.status_code}` : (a.error ?? "no answer"), ` · ${a.duration_ms} ms`)))),
      h("td", {}, retry));
  }

  async function loadDeliveries() {
    clearTimeout(deliveryTimer);
    let page;
    try {
      page = await api("GET", `/v1/jobs/${id}/deliveries?limit=50`);
    } catch (err) {
      replace(deliveriesBox, h("p", {}, err.describe()));
      return;
    }
    replace(deliveriesBox, page.data.length
      ? table("Webhook deliveries, newest first", ["Event", "To", "Status", "Attempts", ""],
          page.data.map(delivery))
      : h("p", {}, "No webhook owed."));
    // Pending deliveries are watched until they settle.
    if (page.data.some((d) => d.status === "pending") && !abort.signal.aborted) {
      deliveryTimer = setTimeout(loadDeliveries, 1500);
    }
  }

  let streaming = false;
  function stream() {
    if (streaming || abort.signal.aborted) return;
    streaming = true;
    steps.replaceChildren(); // the stream replays the job's events from its start
    streamState.textContent = "live";
    follow(`/v1/jobs/${id}/events`, {
      signal: abort.signal,
      onEvent: (event) => {
        steps.append(step(event));
        soon();
      },
      onEnd: () => {
        streaming = false;
        streamState.textContent = "the job has ended";
        soon();
      },
      onError: () => {
        streamState.textContent = "reconnecting…";
      },
    }).finally(() => {
      streaming = false;
    });
  }

  main.append(
    h("p", {}, h("a", { href: "/ui", "data-route": true }, "← Jobs")),
    h("h1", {}, "Job ", h("code", {}, id)),
    head,
    waiting,
    section("Steps", streamState, steps),
    section("Attempts", attemptsBox),
    section("Result", resultBox),
    section("Webhook deliveries", deliveriesBox),
  );
  await refresh();
  await loadDeliveries();
  stream();
  return () => {
    abort.abort();
    clearTimeout(deliveryTimer);
    clearTimeout(refreshing);
  };
}
