"""Size bounds on a job (issue 19): its metadata at any depth, and its outputs and events
cut to a bound, visibly."""

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from api.errors import validation_error
from schemas.jobs import MAX_METADATA_DEPTH, JobCreate, JobResult, TaskResult
from shared.runtime.limits import bound_json, bound_output, bound_result, cut_string, json_size


def _metadata_refusal(metadata: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate({"crew": "echo", "metadata": metadata})
    details: dict[str, list[str]] = validation_error(JobCreate, caught.value).details
    return details["metadata"]


def test_metadata_bounds_hold_at_every_depth() -> None:
    # The audit's body: one nested string of 990,000 characters, accepted before.
    assert _metadata_refusal({"blob": {"x": "y" * 990_000}}) == [
        "blob.x: string values must be at most 1000 characters"
    ]
    assert _metadata_refusal({"tags": ["ok", "z" * 1001]}) == [
        "tags.1: string values must be at most 1000 characters"
    ]
    assert _metadata_refusal({"a": {"k" * 101: 1}}) == ["a: keys must be at most 100 characters"]
    deep: dict[str, Any] = {}
    for _ in range(MAX_METADATA_DEPTH):
        deep = {"d": deep}
    JobCreate.model_validate({"crew": "echo", "metadata": deep})  # as deep as may be
    assert _metadata_refusal({"d": deep}) == [
        f"d{'.d' * MAX_METADATA_DEPTH}: objects and arrays may be nested at most"
        f" {MAX_METADATA_DEPTH} deep"
    ]
    # Within the bounds, nested metadata is kept as it was sent.
    fine = {"team": {"name": "red", "tags": ["a" * 1000, 3]}}
    assert JobCreate.model_validate({"crew": "echo", "metadata": fine}).metadata == fine


def test_cut_string_fits_its_json_in_the_bound_even_when_escapes_grow_it() -> None:
    for text in ("y" * 5000, '"' * 5000, "\x01" * 5000, "ü✓" * 3000, "a\udc80b" * 2000):
        for bound in (2, 3, 10, 1000):
            cut = cut_string(text, bound)
            assert text.startswith(cut) and json_size(cut) <= bound
            # The longest such start: one character more would not fit.
            assert len(cut) == len(text) or json_size(text[: len(cut) + 1]) > bound
    assert cut_string("short", 100) == "short"


def test_an_output_is_cut_and_its_structured_part_kept_only_when_it_leaves_room() -> None:
    raw, structured, original = bound_output("r" * 10_000, {"k": "v"}, 1000)
    assert structured == {"k": "v"} and original == json_size("r" * 10_000) + 9
    assert json_size(raw) + json_size(structured) <= 1000
    raw, structured, original = bound_output("r" * 10, {"k": "v" * 1200}, 1000)
    assert structured is None and raw == "r" * 10 and original is not None
    assert bound_output("small", {"k": 1}, 1000) == ("small", {"k": 1}, None)


def test_a_result_marks_each_output_it_cut_with_its_original_size() -> None:
    result = JobResult(
        raw="x" * 5000,
        tasks=[
            TaskResult(name="a", agent=None, raw="y" * 5000),
            TaskResult(name="b", agent=None, raw="short"),
        ],
        models=["m"],
        offline=True,
    )
    bounded = bound_result(result, 1024)
    assert bounded.truncated and bounded.original_bytes == 5002
    assert json_size(bounded.raw) <= 1024 and bounded.raw == "x" * 1022
    first, second = bounded.tasks
    assert first.truncated and first.original_bytes == 5002 and len(first.raw) == 1022
    assert not second.truncated and second.original_bytes is None and second.raw == "short"
    whole = result.model_copy(update={"raw": "ok", "tasks": []})
    assert bound_result(whole, 1024) == whole


def test_event_data_loses_its_longest_strings_first_and_keeps_its_shape() -> None:
    data = {
        "job_id": "job_1",
        "attempt": 1,
        "result": {"raw": "a" * 50_000, "tasks": [{"name": "t", "raw": "b" * 30_000}]},
    }
    bounded, original = bound_json(data, 10_000)
    assert original == len(orjson.dumps(data))
    assert json_size(bounded) <= 10_000
    assert bounded["job_id"] == "job_1" and bounded["attempt"] == 1
    assert bounded["result"]["tasks"][0]["name"] == "t"
    # Both long strings are cut to one common length, as much of each as fits.
    raw, task_raw = bounded["result"]["raw"], bounded["result"]["tasks"][0]["raw"]
    assert raw == "a" * len(raw) and task_raw == "b" * len(task_raw)
    assert abs(len(raw) - len(task_raw)) <= 1 and len(raw) > 4000
    assert bound_json({"small": "x"}, 100) == ({"small": "x"}, None)
