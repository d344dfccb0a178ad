// The dashboard's shell: sign-in with an API key, the navigation, and the router that maps
// the page's path (/ui, /ui/jobs/<id>, /ui/webhooks, ...) to a view. Each view is a
// module whose `render(main, ctx)` draws into <main> and returns what stops it (streams,
// timers) when another view replaces it.

import { api, describe, session } from "./api.js";
import { field, h, notify, replace } from "./dom.js";
import * as jobs from "./jobs.js";
import * as job from "./job.js";
import * as webhooks from "./webhooks.js";
import * as schedules from "./schedules.js";
import * as account from "./account.js";
import * as health from "./health.js";

const main = document.getElementById("main");
const ctx = { me: null, navigate };
let stop = null;

function route(path) {
  const parts = path.replace(/\/+$/, "").split("/").slice(2); // after "/ui"
  if (parts.length === 0) return { view: jobs, name: "jobs" };
  if (parts[0] === "jobs" && parts[1]) return { view: job, name: "jobs", id: parts[1] };
  const named = { webhooks, schedules, keys: account, usage: account, health };
  if (parts.length === 1 && named[parts[0]]) return { view: named[parts[0]], name: parts[0] };
  return null;
}

export function navigate(path) {
  if (path !== location.pathname) history.pushState({}, "", path);
  show();
}

function signInForm() {
  const input = h("input", {
    type: "password",
    id: "api-key",
    name: "api-key",
    autocomplete: "off",
    required: true,
    spellcheck: "false",
  });
  const error = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    {
      class: "card narrow",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          ctx.me = await api("GET", "/v1/account/api-keys/current", undefined, {
            key: input.value.trim(),
          });
          session.setKey(input.value.trim());
          show();
        } catch (err) {
          error.textContent = describe(err);
        }
      },
    },
    h("h1", {}, "Sign in"),
    h("p", {}, "Your key stays in this tab only, and is sent to this server alone."),
    field("API key", input, "crq_live_… or crq_test_…"),
    h("button", { type: "submit" }, "Sign in"),
    error,
    h("p", { class: "hint" }, "Operators: ", h("a", { href: "/ui/health", "data-route": true }, "the health page"), " takes a debug token."),
  );
  return form;
}

function shell() {
  const signedIn = ctx.me !== null;
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("who").hidden = !signedIn;
  if (signedIn) {
    const mode = ctx.me.livemode ? "live" : "test";
    replace(document.getElementById("who-name"), `${ctx.me.tenant_name} · ${mode}`);
    const admin = ctx.me.scopes.includes("admin");
    for (const el of document.querySelectorAll("[data-admin]")) el.hidden = !admin;
  }
}

async function whoAmI() {
  if (ctx.me || !session.key()) return;
  try {
    ctx.me = await api("GET", "/v1/account/api-keys/current");
  } catch (err) {
    if (err.status === 401 || err.status === 403) session.clear();
    else notify(err.describe(), "error");
  }
}

async function show() {
  if (stop) {
    stop();
    stop = null;
  }
  const found = route(location.pathname);
  await whoAmI();
  shell();
  for (const link of document.querySelectorAll("nav a")) {
    const current = found && link.dataset.view === found.name;
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.replaceChildren();
  if (!found) {
    main.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "/ui", "data-route": true }, "Back to jobs")));
    return;
  }
  // The health page signs in with its own token; everything else needs an API key.
  if (found.view !== health && !ctx.me) {
    document.title = "Sign in · crewq";
    main.append(signInForm());
    main.querySelector("input")?.focus();
    return;
  }
  stop = (await found.view.render(main, { ...ctx, id: found.id, name: found.name })) || null;
  const heading = main.querySelector("h1");
  if (heading) document.title = `${heading.textContent} · crewq`;
}

document.addEventListener("click", (e) => {
  const link = e.target.closest("a[data-route]");
  if (!link || e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  navigate(new URL(link.href).pathname);
  main.focus();
});
window.addEventListener("popstate", show);
document.getElementById("sign-out").addEventListener("click", () => {
  session.clear();
  ctx.me = null;
  navigate("/ui");
});
show();
