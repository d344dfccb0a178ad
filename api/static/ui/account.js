// Keys (admins: list, create, revoke) and this month's usage.

import { api, ApiError, describe } from "./api.js";
import { field, h, money, notify, pill, replace, section, table, when } from "./dom.js";

const SCOPES = ["jobs:read", "jobs:write", "jobs:cancel", "webhooks:manage", "account:read", "admin"];

async function keys(main) {
  const list = h("div");
  const shown = h("div");
  const name = h("input", { type: "text", maxlength: 100 });
  const days = h("input", { type: "number", min: 1 });
  const boxes = SCOPES.map((s) => h("input", { type: "checkbox", value: s, id: `scope-${s.replace(":", "-")}`, checked: s.startsWith("jobs") }));
  const error = h("p", { class: "error", role: "alert" });

  function row(k) {
    return h("tr", { "data-testid": "key" },
      h("td", {}, k.name || "—"),
      h("td", {}, h("code", {}, `${k.prefix}…`)),
      h("td", {}, k.mode),
      h("td", {}, k.scopes.join(", ")),
      h("td", {}, when(k.created_at)),
      h("td", {}, when(k.last_used_at)),
      h("td", {}, k.revoked_at ? pill("revoked") : h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Revoke key ${k.prefix}…? Clients using it will be refused.`)) return;
        try {
          await api("DELETE", `/v1/account/api-keys/${k.id}`);
          await load();
        } catch (err) {
          notify(err.describe(), "error");
        }
      } }, "Revoke")));
  }

  async function load() {
    const page = await api("GET", "/v1/account/api-keys?limit=100");
    replace(list, table("API keys", ["Name", "Key", "Mode", "Scopes", "Created", "Last used", ""], page.data.map(row)));
  }

  const form = h("form", {
    class: "card",
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      const body = { name: name.value, scopes: boxes.filter((b) => b.checked).map((b) => b.value) };
      if (days.value) body.expires_in_days = Number(days.value);
      try {
        const made = await api("POST", "/v1/account/api-keys", body);
        replace(shown, h("div", { class: "card attention", role: "alert" },
          h("p", {}, h("strong", {}, "New key."), " Shown this once."),
          h("pre", { class: "secret", "data-testid": "secret" }, made.key)));
        form.reset();
        await load();
      } catch (err) {
        error.textContent = describe(err);
      }
    },
  },
    field("Name", name),
    h("fieldset", {}, h("legend", {}, "Scopes"),
      boxes.map((b) => h("div", { class: "check" }, b, h("label", { for: b.id }, b.value)))),
    field("Expires in (days)", days, "Empty: never."),
    h("button", { type: "submit" }, "Create key"),
    error);

  main.append(h("h1", {}, "API keys"), shown, section("Keys", list), section("New key", form));
  await load();
}

async function usage(main) {
  const u = await api("GET", "/v1/account/usage");
  const of = (n, limit) => (limit === null ? `${n} (no limit)` : `${n} of ${limit}`);
  main.append(
    h("h1", {}, "Usage"),
    h("dl", { class: "facts", "data-testid": "usage" },
      h("dt", {}, "Plan"), h("dd", {}, u.plan),
      h("dt", {}, "Jobs this month"), h("dd", {}, of(u.jobs_this_month, u.jobs_limit)),
      h("dt", {}, "Resets"), h("dd", {}, when(u.resets_at)),
      h("dt", {}, "Tokens this month"), h("dd", {}, of(u.tokens_this_month, u.max_tokens_per_month)),
      h("dt", {}, "Cost this month"), h("dd", {}, money(u.cost_usd_this_month),
        u.max_cost_usd_per_month !== null ? ` of $${u.max_cost_usd_per_month}` : ""),
      h("dt", {}, "Rate limit"), h("dd", {}, u.rate_limit === null ? "none" : `${u.rate_limit_remaining ?? "?"} of ${u.rate_limit} requests/s left`)),
  );
}

export async function render(main, ctx) {
  try {
    await (ctx.name === "keys" ? keys(main) : usage(main));
  } catch (err) {
    main.replaceChildren(h("h1", {}, ctx.name === "keys" ? "API keys" : "Usage"),
      h("p", { class: "error" }, err instanceof ApiError
        ? (err.status === 403 ? "This key may not see this page (an admin or account:read key may)." : err.describe())
        : String(err)));
  }
}
