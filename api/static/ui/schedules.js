// Schedules: list, create (cron with a time zone, or an interval), pause, resume, delete.

import { api, describe } from "./api.js";
import { acting, field, h, notify, pill, replace, section, table, when } from "./dom.js";

export async function render(main) {
  const crews = (await api("GET", "/v1/crews")).data;
  const list = h("div");
  const crew = h("select", { required: true }, crews.map((c) => h("option", { value: c.name }, c.name)));
  const inputs = h("textarea", { rows: 3, placeholder: '{"topic": "news"}' });
  const cron = h("input", { type: "text", placeholder: "0 9 * * 1-5" });
  const timezone = h("input", { type: "text", placeholder: "UTC" });
  const interval = h("input", { type: "number", min: 1 });
  const error = h("p", { class: "error", role: "alert" });

  const act = acting(load);

  function row(s) {
    const base = `/v1/schedules/${s.id}`;
    return h("tr", { "data-testid": "schedule" },
      h("td", {}, h("code", {}, s.id)),
      h("td", {}, s.crew),
      h("td", {}, s.cron ? `${s.cron} (${s.timezone ?? "UTC"})` : `every ${s.interval} s`),
      h("td", {}, pill(s.paused ? "paused" : "active")),
      h("td", {}, when(s.next_run_at)),
      h("td", {}, s.last_job_id ? h("a", { href: `/ui/jobs/${s.last_job_id}`, "data-route": true }, s.last_job_id) : "—"),
      h("td", {}, h("div", { class: "actions" },
        h("button", { type: "button", class: "secondary",
          onclick: () => act("Pause", () => api("POST", `${base}/${s.paused ? "resume" : "pause"}`)) },
          s.paused ? "Resume" : "Pause"),
        h("button", { type: "button", class: "danger", onclick: () => {
          if (confirm(`Delete schedule ${s.id}?`)) act("Delete", () => api("DELETE", base));
        } }, "Delete"))));
  }

  async function load() {
    const page = await api("GET", "/v1/schedules?limit=100");
    replace(list, page.data.length
      ? table("Schedules", ["Id", "Crew", "When", "State", "Next run", "Last job", "Actions"], page.data.map(row))
      : h("p", {}, "No schedule yet."));
  }

  const form = h("form", {
    class: "card",
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      const body = { crew: crew.value, inputs: {} };
      try {
        if (inputs.value.trim()) body.inputs = JSON.parse(inputs.value);
      } catch (err) {
        error.textContent = `Inputs: ${err.message}`;
        return;
      }
      if (cron.value) {
        body.cron = cron.value;
        if (timezone.value) body.timezone = timezone.value;
      } else if (interval.value) {
        body.interval = Number(interval.value);
      }
      try {
        await api("POST", "/v1/schedules", body);
        notify("Schedule created");
        form.reset();
        await load();
      } catch (err) {
        error.textContent = describe(err);
      }
    },
  },
    field("Crew", crew),
    field("Inputs (JSON)", inputs),
    field("Cron", cron, "Or leave empty and give an interval."),
    field("Time zone", timezone),
    field("Interval (seconds)", interval),
    h("button", { type: "submit" }, "Create schedule"),
    error);

  main.append(h("h1", {}, "Schedules"), section("Schedules", list), section("New schedule", form));
  await load();
}
