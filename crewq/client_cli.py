"""`crewq jobs …` and `crewq webhooks …`: the API from a shell, through `crewq_client`.

They talk to a running API (CREWQ_URL, CREWQ_API_KEY; `--url`, `--api-key` override), never
to the database, unlike the operator's verbs (`keys`, `tenants`, `schedules`, `models`).
Tables for people, `--json` for scripts; the exit code says how a job ended (`Exit`)."""

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, TextIO

from crewq_client import ApiError, Client, ConnectionFailed, WaitTimeout
from crewq_client.jobs import JobOptions
from pydantic import BaseModel

from schemas.events import Event, EventType
from schemas.jobs import Job, JobStatus, ResumeFrom
from schemas.webhooks import DeliveryStatus

DEFAULT_URL = "http://127.0.0.1:8000"


class Exit(IntEnum):
    """How a client verb ended. For `--wait` and `watch`, how the job ended."""

    SUCCEEDED = 0  # done; a waited-for job completed
    FAILED = 1  # the job failed
    USAGE = 2  # the command line was wrong (argparse's own code), or no API key
    CANCELLED = 3  # the job was cancelled
    EXPIRED = 4  # the job expired before it started, or the wait timed out
    API_ERROR = 5  # the API refused the request, or could not be reached


EXIT_HELP = "exit codes: " + ", ".join(f"{c.value} {c.name.lower()}" for c in Exit)

_BY_STATUS = {
    JobStatus.COMPLETED: Exit.SUCCEEDED,
    JobStatus.FAILED: Exit.FAILED,
    JobStatus.CANCELLED: Exit.CANCELLED,
    JobStatus.EXPIRED: Exit.EXPIRED,
}


def exit_for(job: Job) -> Exit:
    """A job's outcome as an exit code (SUCCEEDED for one that has not ended: nothing
    went wrong yet)."""
    return _BY_STATUS.get(job.status, Exit.SUCCEEDED)


# --- the command line ---


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the API's base URL (CREWQ_URL; default {DEFAULT_URL})")
    common.add_argument("--api-key", help="an API key (CREWQ_API_KEY)")
    common.add_argument("--json", action="store_true", help="print the API's JSON, not a table")

    jobs = sub.add_parser(
        "jobs", help="submit, follow and manage jobs through the API", epilog=EXIT_HELP
    ).add_subparsers(dest="jobs_command", required=True)
    submit = jobs.add_parser(
        "submit", parents=[common], help="submit a job of CREW", epilog=EXIT_HELP
    )
    submit.add_argument("crew")
    submit.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an input (a string); KEY:=JSON for a number, list, object…; repeat for more",
    )
    submit.add_argument(
        "--inputs-json", metavar="FILE", help="inputs as a JSON object from FILE (- for stdin)"
    )
    submit.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="kept with the job"
    )
    submit.add_argument("--webhook-url", help="receives the job's outcome")
    submit.add_argument("--timeout", type=int, help="seconds the job may run")
    submit.add_argument("--max-retries", type=int)
    submit.add_argument("--priority", type=int)
    submit.add_argument("--delay", type=int, help="seconds before it may start")
    submit.add_argument("--idempotency-key", help="default: a new one")
    submit.add_argument("--wait", action="store_true", help="wait for the job to end")
    submit.add_argument("--wait-timeout", type=float, help="seconds to wait at most (then exit 4)")
    jobs.add_parser("get", parents=[common], help="read a job").add_argument("job_id")
    listing = jobs.add_parser("list", parents=[common], help="list jobs, newest first")
    listing.add_argument("--status", choices=[s.value for s in JobStatus])
    listing.add_argument("--crew")
    listing.add_argument("--limit", type=int, default=20, help="how many at most (default 20)")
    watch = jobs.add_parser(
        "watch",
        parents=[common],
        help="follow a job live (steps, tokens, progress) until it ends",
        epilog=EXIT_HELP,
    )
    watch.add_argument("job_id")
    jobs.add_parser("cancel", parents=[common], help="cancel a job").add_argument("job_id")
    retry = jobs.add_parser("retry", parents=[common], help="run a failed or cancelled job again")
    retry.add_argument("job_id")
    retry.add_argument(
        "--from",
        dest="from_",
        choices=[r.value for r in ResumeFrom],
        help="checkpoint (default): after its last finished task; start: from the beginning",
    )
    answer = jobs.add_parser("input", parents=[common], help="answer a job awaiting input")
    answer.add_argument("job_id")
    answer.add_argument("--answer", default="", help="feedback on the task's answer")
    answer.add_argument(
        "--reject",
        action="store_true",
        help="do the task again with the feedback (default: approve its answer)",
    )

    hooks = sub.add_parser(
        "webhooks", help="webhook endpoints and their deliveries, through the API"
    ).add_subparsers(dest="webhooks_command", required=True)
    hooks.add_parser("list", parents=[common], help="list endpoints")
    create = hooks.add_parser(
        "create", parents=[common], help="register an endpoint (prints its secret once)"
    )
    create.add_argument("endpoint_url")
    create.add_argument(
        "--event", action="append", default=[], help="an event type (default: *); repeat"
    )
    create.add_argument("--description", default="")
    for verb, what in (
        ("get", "read an endpoint"),
        ("delete", "remove an endpoint"),
        ("test", "send a test event and show the receiver's answer"),
        ("disable", "stop deliveries to an endpoint"),
        ("enable", "resume deliveries to an endpoint (its failures forgotten)"),
    ):
        hooks.add_parser(verb, parents=[common], help=what).add_argument("endpoint_id")
    rotate = hooks.add_parser("rotate", parents=[common], help="rotate an endpoint's secret")
    rotate.add_argument("endpoint_id")
    rotate.add_argument("--grace-seconds", type=int, help="the old secret keeps signing this long")
    deliveries = hooks.add_parser("deliveries", parents=[common], help="an endpoint's deliveries")
    deliveries.add_argument("endpoint_id")
    deliveries.add_argument("--status", choices=[s.value for s in DeliveryStatus])
    deliveries.add_argument("--limit", type=int, default=20)


class UsageError(Exception):
    """A command line the API cannot be asked with."""


def run(args: argparse.Namespace) -> Exit:
    """Run one client verb; its exit code."""
    url = args.url or os.environ.get("CREWQ_URL") or DEFAULT_URL
    key = args.api_key or os.environ.get("CREWQ_API_KEY")
    out = Output(args.json, sys.stdout)
    try:
        if not key:
            raise UsageError("give an API key: --api-key or CREWQ_API_KEY")
        with Client(url, key) as client:
            if args.command == "jobs":
                return _JOB_VERBS[args.jobs_command](client, args, out)
            return _WEBHOOK_VERBS[args.webhooks_command](client, args, out)
    except UsageError as exc:
        print(f"crewq: {exc}", file=sys.stderr)
        return Exit.USAGE
    except ApiError as exc:
        out.error(exc)
        return Exit.API_ERROR
    except ConnectionFailed as exc:
        print(f"crewq: the API at {url} could not be reached: {exc}", file=sys.stderr)
        return Exit.API_ERROR


# --- output ---


class Output:
    def __init__(self, as_json: bool, stream: TextIO) -> None:
        self.as_json = as_json
        self.stream = stream

    def line(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def model(self, model: BaseModel) -> None:
        self.line(model.model_dump_json(by_alias=True))

    def models(self, models: Iterable[BaseModel]) -> None:
        self.line(json.dumps([m.model_dump(mode="json", by_alias=True) for m in models]))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Plain columns, aligned: readable, and cut with `awk` if need be."""
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        for row in (header, *rows):
            self.line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    def fields(self, pairs: Sequence[tuple[str, str]]) -> None:
        width = max(len(k) for k, _ in pairs)
        for name, value in pairs:
            self.line(f"{name.ljust(width)}  {value}")

    def error(self, exc: ApiError) -> None:
        if self.as_json:
            detail = {
                "status": exc.status,
                "code": str(exc.code),
                "message": exc.message,
                "details": exc.details,
                "request_id": exc.request_id,
            }
            print(json.dumps({"error": detail}), file=sys.stderr)
            return
        print(f"crewq: {exc.status} {exc.code}: {exc.message}", file=sys.stderr)
        if exc.details:
            print(f"  details: {json.dumps(exc.details)}", file=sys.stderr)
        print(f"  request id: {exc.request_id}", file=sys.stderr)


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def _tokens(job: Job) -> str:
    if job.usage is not None and job.usage.total_tokens:
        return str(job.usage.total_tokens)
    total = (job.token_usage or {}).get("total_tokens")
    return str(total) if total is not None else "-"


def _progress(job: Job) -> str:
    if job.progress is None:
        return "-"
    p = job.progress
    now = f" ({p.current_task})" if p.current_task else ""
    return f"{p.completed_tasks}/{p.total_tasks} tasks{now}"


def show_job(out: Output, job: Job) -> None:
    if out.as_json:
        out.model(job)
        return
    pairs = [
        ("id", job.id),
        ("status", job.status.value),
        ("crew", job.crew),
        ("attempt", f"{job.attempt} of {job.max_retries + 1}"),
        ("progress", _progress(job)),
        ("tokens", _tokens(job)),
        ("created", _when(job.created_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
    ]
    if job.error is not None:
        pairs.append(("error", f"{job.error.code}: {job.error.message}"))
    if job.input_request is not None:
        pairs.append(("asks", f"{job.input_request.task}: {job.input_request.prompt}"))
    if job.result is not None:
        raw = job.result.raw
        pairs.append(("result", raw if len(raw) <= 500 else raw[:500] + "…"))
    out.fields(pairs)


# --- the verbs ---


def _pairs(given: Sequence[str], what: str) -> dict[str, Any]:
    """KEY=VALUE as a string, KEY:=JSON as that JSON value."""
    found: dict[str, Any] = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not key or key == ":":
            raise UsageError(f"{what} {item!r}: write KEY=VALUE (or KEY:=JSON)")
        if key.endswith(":"):
            try:
                found[key[:-1]] = json.loads(value)
            except ValueError as exc:
                raise UsageError(f"{what} {item!r}: {value!r} is not JSON") from exc
        else:
            found[key] = value
    return found


def _inputs(args: argparse.Namespace) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if args.inputs_json:
        try:
            text = (
                sys.stdin.read() if args.inputs_json == "-" else Path(args.inputs_json).read_text()
            )
            inputs = json.loads(text)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--inputs-json: {exc}") from exc
        if not isinstance(inputs, dict):
            raise UsageError("--inputs-json: the inputs must be a JSON object")
    return {**inputs, **_pairs(args.input, "--input")}


def jobs_submit(client: Client, args: argparse.Namespace, out: Output) -> Exit:
    options: JobOptions = {}
    if args.metadata:
        options["metadata"] = _pairs(args.metadata, "--metadata")
    if args.webhook_url:
        options["webhook_url"] = args.webhook_url
    for name in ("timeout", "max_retries", "priority", "delay"):
        if (value := getattr(args, name)) is not None:
            options[name] = value
    job = client.jobs.submit(
        args.crew, _inputs(args), idempotency_key=args.idempotency_key, **options
    )
    if not args.wait:
        if out.as_json:
            out.model(job)
        else:
            out.line(f"submitted {job.id} ({job.status.value})")
        return Exit.SUCCEEDED
    try:
        job = client.jobs.wait(job.id, timeout=args.wait_timeout)
    except WaitTimeout as exc:
        show_job(out, exc.job)
        print(f"crewq: {exc}", file=sys.stderr)
        return Exit.EXPIRED
    show_job(out, job)
    return exit_for(job)


def jobs_get(client: Client, args: argparse.Namespace, out: Output) -> Exit:
    show_job(out, client.jobs.get(args.job_id))
    return Exit.SUCCEEDED


def jobs_list(client: Client, args: argparse.Namespace, out: Output) -> Exit:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    found = list(
        client.jobs.list(
            status=JobStatus(args.status) if args.status else None,
            crew=args.crew,
            limit=args.limit,
        )
    )
    if out.as_json:
        out.models(found)
    elif not found:
        out.line("no jobs")
    else:
        out.table(
            ["ID", "STATUS", "CREW", "CREATED", "PROGRESS", "TOKENS"],
            [
                [j.id, j.status.value, j.crew, _when(j.created_at), _progress(j), _tokens(j)]
                for j in found
            ],
        )
    return Exit.SUCCEEDED


def _step(event: Event) -> str:
    """One line for a person: what happened, with its numbers."""
    data = event.data
    match event.type:
        case EventType.TASK_STARTED:
            return f"task {data.get('index')}/{data.get('total_tasks')} started: {data.get('task')}"
        case EventType.TASK_COMPLETED:
            task = data.get("task") or {}
            return f"task completed: {task.get('name')}"
        case EventType.LLM_COMPLETED:
            tokens = int(data.get("prompt_tokens", 0)) + int(data.get("completion_tokens", 0))
            return f"llm {data.get('model')}: {tokens} tokens in {data.get('duration_ms')} ms"
        case EventType.TOOL_COMPLETED:
            return f"tool {data.get('tool')} ({data.get('duration_ms')} ms)"
        case EventType.LLM_THROTTLED:
            return f"llm {data.get('model')} throttled {data.get('waited_ms')} ms"
        case _:
            status = data.get("status")
            progress = data.get("progress") or {}
            done = progress.get("completed_tasks")
            tail = f" ({done}/{progress.get('total_tasks')} tasks)" if done is not None else ""
            return f"{event.type.value}{f': {status}' if status else ''}{tail}"


def jobs_watch(client: Client, args: argparse.Namespace, out: Output) -> Exit:
    tokens = 0
    for event in client.jobs.events(args.job_id):
        if out.as_json:
            out.model(event)  # one event a line (NDJSON)
            continue
        if event.type is EventType.LLM_COMPLETED:
            tokens += int(event.data.get("prompt_tokens", 0))
            tokens += int(event.data.get("completion_tokens", 0))
        out.line(f"{event.created_at:%H:%M:%S}  {_step(event)}  [{tokens} tokens]")
    job = client.jobs.get(args.job_id)
    if not out.as_json:
        out.line(f"{job.id} {job.status.value}")
    return exit_for(job)


def jobs_cancel(client: Client, args: argparse.Namespace, out: Output) -> Exit:
    show_job(out, client.jobs.cancel(args.job_id))
    return Exit.SUCCEEDED


def jobs_retry(client: Client, args: argparse.Namespace, out: Output) -> Exit:
    start = ResumeFrom(args.from_) if args.from_ else None
    show_job(out, client.jobs.retry(args.job_id, from_=start))
    return Exit.SUCCEEDED


def jobs_input(client: Client, args: argparse.Namespace, out: Output) -> Exit:
    job = client.jobs.answer_input(args.job_id, approve=not args.reject, feedback=args.answer)
    show_job(out, job)
    return Exit.SUCCEEDED


def _endpoints(out: Output, found: Sequence[Any]) -> None:
    if out.as_json:
        out.models(found)
        return
    if not found:
        out.line("no webhook endpoints")
        return
    out.table(
        ["ID", "URL", "EVENTS", "ENABLED", "CREATED"],
        [
            [e.id, e.url, ",".join(e.events), "yes" if e.enabled else "no", _when(e.created_at)]
            for e in found
        ],
    )


def _one(
    show: Callable[[Client, str], BaseModel],
) -> Callable[[Client, argparse.Namespace, Output], Exit]:
    """A verb on one endpoint: a table of one row for people, its JSON for scripts."""

    def verb(client: Client, args: argparse.Namespace, out: Output) -> Exit:
        found = show(client, args.endpoint_id)
        if out.as_json:
            out.model(found)
        else:
            out.fields([(k, str(v)) for k, v in found.model_dump(mode="json").items()])
        return Exit.SUCCEEDED

    return verb


def webhooks_list(client: Client, args: argparse.Namespace, out: Output) -> Exit:
    _endpoints(out, list(client.webhooks.list()))
    return Exit.SUCCEEDED


def webhooks_create(client: Client, args: argparse.Namespace, out: Output) -> Exit:
    made = client.webhooks.create(
        args.endpoint_url, events=args.event or None, description=args.description
    )
    if out.as_json:
        out.model(made)
    else:
        out.line(f"created {made.id} for {made.url}")
        out.line(f"secret (shown once): {made.secret}")
    return Exit.SUCCEEDED


def webhooks_delete(client: Client, args: argparse.Namespace, out: Output) -> Exit:
    client.webhooks.delete(args.endpoint_id)
    if not out.as_json:
        out.line(f"deleted {args.endpoint_id}")
    return Exit.SUCCEEDED


def webhooks_rotate(client: Client, args: argparse.Namespace, out: Output) -> Exit:
    rotated = client.webhooks.rotate_secret(args.endpoint_id, grace_seconds=args.grace_seconds)
    if out.as_json:
        out.model(rotated)
    else:
        out.line(f"new secret (shown once): {rotated.secret}")
        out.line(f"the old one signs until {_when(rotated.previous_secret_expires_at)}")
    return Exit.SUCCEEDED


def webhooks_deliveries(client: Client, args: argparse.Namespace, out: Output) -> Exit:
    status = DeliveryStatus(args.status) if args.status else None
    found = list(client.webhooks.deliveries(args.endpoint_id, status=status, limit=args.limit))
    if out.as_json:
        out.models(found)
    elif not found:
        out.line("no deliveries")
    else:
        out.table(
            ["ID", "EVENT", "STATUS", "ATTEMPTS", "LAST CODE", "CREATED"],
            [
                [
                    d.id,
                    d.event_type,
                    d.status.value,
                    str(d.attempt_count),
                    str(d.last_status_code or "-"),
                    _when(d.created_at),
                ]
                for d in found
            ],
        )
    return Exit.SUCCEEDED


Verb = Callable[[Client, argparse.Namespace, Output], Exit]

_JOB_VERBS: dict[str, Verb] = {
    "submit": jobs_submit,
    "get": jobs_get,
    "list": jobs_list,
    "watch": jobs_watch,
    "cancel": jobs_cancel,
    "retry": jobs_retry,
    "input": jobs_input,
}
_WEBHOOK_VERBS: dict[str, Verb] = {
    "list": webhooks_list,
    "create": webhooks_create,
    "get": _one(lambda c, i: c.webhooks.get(i)),
    "delete": webhooks_delete,
    "test": _one(lambda c, i: c.webhooks.test(i)),
    "disable": _one(lambda c, i: c.webhooks.disable(i)),
    "enable": _one(lambda c, i: c.webhooks.enable(i)),
    "rotate": webhooks_rotate,
    "deliveries": webhooks_deliveries,
}
