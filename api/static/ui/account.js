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

  main.append(h("h1", {}, "API keys"), shown, section("Keys", list), section("New key", form),
    section("IP allowlist", await allowlist()));
  await load();
}

// Where the tenant's keys may be used from (GET/PUT /v1/account/security). The PUT carries
// the version read (If-Match), and a list that would shut out this very browser is refused
// (409 WOULD_LOCK_OUT_CALLER) until the person confirms with its address.
async function allowlist() {
  const box = h("div");
  const ips = h("textarea", { rows: 4, placeholder: "203.0.113.0/24\n198.51.100.7" });
  const confirmBox = h("div");
  const error = h("p", { class: "error", role: "alert" });
  let current = null;

  async function load() {
    current = await api("GET", "/v1/account/security");
    ips.value = current.ip_allowlist.ips.join("\n");
    replace(confirmBox);
    replace(box, h("p", { "data-testid": "allowlist" },
      current.ip_allowlist.enabled
        ? `Keys may be used from ${current.ip_allowlist.ips.length} network(s) only.`
        : "Keys may be used from any address.",
      ` This browser reaches crewq from ${current.client_address ?? "an unknown address"}.`));
  }

  const form = h("form", {
    class: "card",
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      const body = { ip_allowlist: { ips: ips.value.split(/[\s,]+/).filter(Boolean) } };
      const confirmed = confirmBox.querySelector("input:checked");
      if (confirmed) body.confirm_lockout = confirmed.value;
      try {
        await api("PUT", "/v1/account/security", body, { headers: { "If-Match": current.version } });
        notify("Allowlist saved");
        await load();
      } catch (err) {
        error.textContent = describe(err);
        if (err instanceof ApiError && err.code === "WOULD_LOCK_OUT_CALLER" && err.details) {
          const address = err.details.client_address;
          const check = h("input", { type: "checkbox", id: "confirm-lockout", value: address });
          replace(confirmBox, h("div", { class: "check" }, check,
            h("label", { for: "confirm-lockout" }, `Save it anyway: this browser (${address}) will be refused`)));
        }
      }
    },
  },
  field("Allowed networks, one per line (empty: any address)", ips),
  confirmBox,
  h("button", { type: "submit" }, "Save allowlist"),
  error);
  await load();
  return h("div", {}, box, form);
}

// The period's jobs per crew (GET /v1/account/metrics): outcomes, run time, queue wait,
// tokens and cost.
async function metrics() {
  const box = h("div");
  const period = h("select", { onchange: () => load() },
    ["24h", "7d", "30d"].map((p) => h("option", { value: p, selected: p === "7d" }, p)));
  const secs = (p) => (p.p50 === null ? "—" : `${p.p50.toFixed(1)} / ${p.p95.toFixed(1)} s`);
  const row = (name, m) => h("tr", { "data-testid": "crew-metrics" },
    h("td", {}, name), h("td", {}, m.jobs), h("td", {}, m.by_status.completed),
    h("td", {}, m.by_status.failed), h("td", {}, secs(m.run_seconds)),
    h("td", {}, secs(m.queue_seconds)), h("td", {}, m.usage.total_tokens),
    h("td", {}, money(m.usage.cost_usd)));

  async function load() {
    const m = await api("GET", `/v1/account/metrics?period=${period.value}`);
    replace(box, table(`Jobs created in the last ${m.period}, by crew`,
      ["Crew", "Jobs", "Completed", "Failed", "Run p50 / p95", "Queue wait p50 / p95", "Tokens", "Cost"],
      [...m.crews.map((c) => row(c.crew, c)), row("All crews", m.totals)]));
  }

  await load();
  return h("div", {}, field("Period", period), box);
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
    section("By crew", await metrics()),
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
