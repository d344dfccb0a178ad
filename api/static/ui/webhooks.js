// Webhook endpoints: list, create (the secret shown once), test, rotate the secret,
// disable or enable.

import { api, describe } from "./api.js";
import { acting, field, h, notify, pill, replace, section, table, when } from "./dom.js";

function secretBox(title, secret) {
  return h("div", { class: "card attention", role: "alert" },
    h("p", {}, h("strong", {}, title), " Shown this once; store it where your receiver reads it."),
    h("pre", { class: "secret", "data-testid": "secret" }, secret));
}

export async function render(main) {
  const list = h("div");
  const shown = h("div");
  const url = h("input", { type: "url", required: true, placeholder: "https://example.com/hooks/crewq" });
  const events = h("input", { type: "text", value: "*" });
  const description = h("input", { type: "text", maxlength: 200 });
  const error = h("p", { class: "error", role: "alert" });

  const act = acting(load);

  function row(e) {
    const base = `/v1/webhooks/${e.id}`;
    const buttons = h("div", { class: "actions" },
      h("button", { type: "button", class: "secondary", onclick: () => act("Test", async () => {
        const r = await api("POST", `${base}/test`);
        notify(r.succeeded
          ? `Test delivered: HTTP ${r.status_code} in ${r.duration_ms} ms`
          : `Test failed: ${r.status_code ? `HTTP ${r.status_code}` : r.error}`, r.succeeded ? "info" : "error");
      }) }, "Test"),
      h("button", { type: "button", class: "secondary", onclick: () => act("Rotate", async () => {
        const r = await api("POST", `${base}/rotate-secret`);
        replace(shown, secretBox("New signing secret.", r.secret));
      }) }, "Rotate secret"),
      h("button", { type: "button", class: e.enabled ? "danger" : "secondary",
        onclick: () => act(e.enabled ? "Disable" : "Enable", () => api("PATCH", base, { enabled: !e.enabled })) },
        e.enabled ? "Disable" : "Enable"),
    );
    return h("tr", { "data-testid": "endpoint" },
      h("td", { class: "wrap" }, e.url, e.description ? h("small", { class: "hint" }, ` ${e.description}`) : null),
      h("td", {}, e.events.join(", ")),
      h("td", {}, pill(e.enabled ? "enabled" : "disabled"), e.disabled_reason ? ` ${e.disabled_reason}` : ""),
      h("td", {}, e.failing_since ? when(e.failing_since) : "—"),
      h("td", {}, buttons));
  }

  async function load() {
    const page = await api("GET", "/v1/webhooks?limit=100");
    replace(list, page.data.length
      ? table("Endpoints", ["URL", "Events", "State", "Failing since", "Actions"], page.data.map(row))
      : h("p", {}, "No endpoint yet."));
  }

  const form = h("form", {
    class: "card",
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      try {
        const made = await api("POST", "/v1/webhooks", {
          url: url.value,
          events: events.value.split(",").map((s) => s.trim()).filter(Boolean),
          description: description.value,
        });
        replace(shown, secretBox("Signing secret.", made.secret));
        form.reset();
        await load();
      } catch (err) {
        error.textContent = describe(err);
      }
    },
  },
    field("Endpoint URL", url),
    field("Events", events, "Comma-separated types, or * for every outcome event."),
    field("Description", description),
    h("button", { type: "submit" }, "Create endpoint"),
    error);

  main.append(h("h1", {}, "Webhooks"), shown, section("Endpoints", list), section("New endpoint", form));
  await load();
}
