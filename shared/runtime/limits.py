"""How large what a job holds may grow: its inputs and metadata, its stored outputs, its
events, and the pages that list them.

A job's size used to be whatever its tenant sent and its crew answered, and a list of a
hundred such jobs was loaded whole into the API (issue 19: sixty jobs of nested metadata made
each `GET /v1/jobs` answer 60 MB and eight at once took the API to a gigabyte). So inputs
and metadata are refused past a bound, a crew's outputs and a job's events are stored up to
a bound with the rest cut off visibly (`truncated`, `original_bytes`), and a page stops
adding items once its byte budget is spent. Sizes are those of the JSON as the API writes
it (orjson: compact, UTF-8).
"""

import json
from typing import Any

import orjson

from schemas.jobs import JobResult, TaskResult

# Inputs and metadata of one job together, as JSON. 64 KiB is some 16,000 tokens of text:
# more than a prompt's parameters need (a document that large belongs behind a URL a tool
# fetches), and small enough that a page of 100 such jobs stays a few megabytes.
DEFAULT_MAX_INPUT_BYTES = 64 * 1024
# Each output stored (a task's, the crew's final one): raw text plus structured JSON.
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024
# What an event's data holds around an output (ids, names, counts): an event's data may be
# this much larger than one output before it is cut.
EVENT_SLACK_BYTES = 4 * 1024
# The most of jobs or events one list answer carries (it always carries at least one).
DEFAULT_MAX_PAGE_BYTES = 1024 * 1024


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON, as it will be stored."""
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        # A crew's output may hold lone surrogates, which orjson refuses; they are stored
        # as U+FFFD (`shared.runtime.db.storable`), which takes as many bytes as this counts.
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return len(text.encode("utf-8", "surrogatepass"))


def cut_string(text: str, max_bytes: int) -> str:
    """The longest start of `text` whose JSON (quotes and escapes included) is at most
    `max_bytes` (at least 2: the empty string's quotes)."""
    if json_size(text) <= max_bytes:
        return text
    cut = text[: max(0, max_bytes - 2)]
    while (excess := json_size(cut) - max_bytes) > 0:
        # A character is 1 to 6 bytes of JSON (`\u001f`): dropping a sixth of the bytes too
        # many in characters never drops one too many, and the excess shrinks by a sixth
        # or more each time, so the cut is the longest that fits, in a few passes.
        cut = cut[: len(cut) - max(1, excess // 6)]
    return cut


def bound_output(
    raw: str, structured: dict[str, Any] | None, max_bytes: int
) -> tuple[str, dict[str, Any] | None, int | None]:
    """(raw, structured, original size) of an output cut to `max_bytes` of JSON; the size is
    None when it was kept whole. Structured output is all or nothing (half of a JSON object
    is no object): it is dropped when it alone takes more than half the bound, and the raw
    text gets what is left."""
    structured_size = json_size(structured) if structured is not None else 0
    total = json_size(raw) + structured_size
    if total <= max_bytes:
        return raw, structured, None
    if structured_size > max_bytes // 2:
        structured, structured_size = None, 0
    return cut_string(raw, max(2, max_bytes - structured_size)), structured, total


def bound_task(task: TaskResult, max_bytes: int) -> TaskResult:
    raw, structured, original = bound_output(task.raw, task.structured, max_bytes)
    if original is None:
        return task
    return task.model_copy(
        update={"raw": raw, "structured": structured, "truncated": True, "original_bytes": original}
    )


def bound_result(result: JobResult, max_bytes: int) -> JobResult:
    """`result` with its final output and each task's output cut to `max_bytes` each."""
    raw, structured, original = bound_output(result.raw, result.structured, max_bytes)
    update: dict[str, Any] = {"tasks": [bound_task(t, max_bytes) for t in result.tasks]}
    if original is not None:
        update |= {
            "raw": raw,
            "structured": structured,
            "truncated": True,
            "original_bytes": original,
        }
    return result.model_copy(update=update)


def _string_sizes(value: Any, into: list[int]) -> None:
    if isinstance(value, str):
        into.append(json_size(value))
    elif isinstance(value, dict):
        for item in value.values():
            _string_sizes(item, into)
    elif isinstance(value, list):
        for item in value:
            _string_sizes(item, into)


def _cut_strings(value: Any, cap: int) -> Any:
    if isinstance(value, str):
        return cut_string(value, cap)
    if isinstance(value, dict):
        return {k: _cut_strings(v, cap) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_strings(v, cap) for v in value]
    return value


def bound_json(data: dict[str, Any], max_bytes: int) -> tuple[dict[str, Any], int | None]:
    """`data` (JSON values, storable strings) cut to about `max_bytes`, and its original size
    (None: kept whole). Only string values are shortened, the longest first, each to one
    common length found by bisection, so the shape stays and short fields (ids, names)
    stay whole. What is not text (keys, numbers, the structure) is never cut: the callers'
    data is bounded there by other means."""
    size = json_size(data)
    if size <= max_bytes:
        return data, None
    sizes: list[int] = []
    _string_sizes(data, sizes)
    excess = size - max_bytes
    # The largest cap that removes enough: sum(size - cap over strings longer) >= excess.
    low, high = 2, max(sizes, default=2)
    while low < high:
        cap = (low + high + 1) // 2
        if sum(s - cap for s in sizes if s > cap) >= excess:
            low = cap
        else:
            high = cap - 1
    return _cut_strings(data, low), size
