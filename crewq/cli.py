"""The `crewq` command: `dev` runs everything on one machine; `migrate`, `api`, `worker`,
`dispatcher` run one role against configured URLs; `keys create` issues an API key.

This is the one place that imports every package; it only wires them together.
"""

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Coroutine
from typing import Any

from shared.logs import configure
from shared.settings import Settings, get_settings
from shared.tracing import setup_tracing


def _run(main: Coroutine[Any, Any, int]) -> None:
    """Run a role until it stops, and exit with its status: non-zero when one of its
    supervised tasks failed, so that compose or Kubernetes restarts it."""
    code = 0
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(main)
    sys.exit(code)


def cmd_migrate(settings: Settings) -> None:
    from shared.db import migrate

    applied = asyncio.run(migrate(settings.require_database_url))
    print(f"applied {len(applied)} migrations" + (f": {', '.join(applied)}" if applied else ""))


def cmd_api(settings: Settings) -> None:
    from api.app import serve

    _run(serve(settings))


def cmd_worker(settings: Settings) -> None:
    from worker.main import serve

    _run(serve(settings))


def cmd_dispatcher(settings: Settings) -> None:
    from worker.dispatcher import serve

    _run(serve(settings))


def cmd_keys_create(settings: Settings, tenant: str, scopes: str) -> None:
    import asyncpg

    from shared.keys import create_key

    async def create() -> str:
        conn = await asyncpg.connect(settings.require_database_url)
        try:
            return await create_key(
                conn, tenant, [s.strip() for s in scopes.split(",") if s.strip()]
            )
        finally:
            await conn.close()

    try:
        print(asyncio.run(create()))
    except ValueError as exc:
        sys.exit(f"crewq keys create: {exc}")


def cmd_tenants_set(settings: Settings, tenant: str, limits: dict[str, int]) -> None:
    import asyncpg

    from shared import tenants

    async def update() -> bool:
        conn = await asyncpg.connect(settings.require_database_url)
        try:
            # 0 puts a bound back to the platform default.
            return await tenants.set_limits(conn, tenant, {k: v or None for k, v in limits.items()})
        finally:
            await conn.close()

    if not limits:
        sys.exit("crewq tenants set: give at least one bound to change")
    if not asyncio.run(update()):
        sys.exit(f"crewq tenants set: no tenant named {tenant!r}")
    for name, value in limits.items():
        default = getattr(settings, f"tenant_{name}")
        shown = f"{value}" if value else f"the default ({default})"
        print(f"{tenant}: {name.replace('_', ' ')}: {shown}")


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
    create.add_argument("--tenant", required=True)
    create.add_argument("--scopes", default="jobs:read,jobs:write,webhooks:manage")
    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="tenants_command", required=True
    )
    bounds = tenants.add_parser(
        "set", help="change a tenant's bounds (0 puts one back to the platform default)"
    )
    bounds.add_argument("--tenant", required=True)
    for flag, what in (
        ("--max-running-jobs", "jobs running at once (CREWQ_TENANT_MAX_RUNNING_JOBS)"),
        ("--max-pending-jobs", "jobs waiting to run (CREWQ_TENANT_MAX_PENDING_JOBS)"),
        ("--max-webhook-endpoints", "webhook endpoints (CREWQ_TENANT_MAX_WEBHOOK_ENDPOINTS)"),
        ("--max-event-streams", "event streams open at once (CREWQ_TENANT_MAX_EVENT_STREAMS)"),
    ):
        bounds.add_argument(flag, type=int, help=what)
    args = parser.parse_args(argv)

    settings = get_settings()
    configure(settings.log_level, role=args.command)
    if args.command in ("api", "worker", "dispatcher"):
        setup_tracing(args.command)
    if args.command == "dev":
        from crewq.dev import run_dev

        run_dev(settings)
    elif args.command == "migrate":
        cmd_migrate(settings)
    elif args.command == "api":
        cmd_api(settings)
    elif args.command == "worker":
        cmd_worker(settings)
    elif args.command == "dispatcher":
        cmd_dispatcher(settings)
    elif args.command == "keys":
        cmd_keys_create(settings, args.tenant, args.scopes)
    elif args.command == "tenants":
        from shared.tenants import LIMITS

        limits = {n: getattr(args, n) for n in LIMITS if getattr(args, n) is not None}
        cmd_tenants_set(settings, args.tenant, limits)
