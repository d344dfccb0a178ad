"""shared/runtime/queue.py's job records: JSON holding the job id, and nothing else accepted. The
payloads refused here are only ever parsed as JSON; none is unpickled."""

import pickle

import orjson
import pytest

from shared.runtime import queue


class _Marker:
    """Unpickling this calls print: any code would do."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled",))


def test_a_record_is_json_holding_the_job_id() -> None:
    payload = queue.job_record("job_01abc", 1_700_000_000_000)
    assert orjson.loads(payload) == {
        "t": None,
        "f": queue.RUN_JOB,
        "a": ["job_01abc"],
        "k": {},
        "et": 1_700_000_000_000,
    }
    assert queue.load_job(payload, "job_01abc")["a"] == ["job_01abc"]
    assert queue.load_job(payload)["et"] == 1_700_000_000_000


_DROP = object()


def _record(**changes: object) -> bytes:
    record: dict[str, object] = {"t": None, "f": queue.RUN_JOB, "a": ["job_1"], "k": {}, "et": 1}
    record.update(changes)
    return orjson.dumps({k: v for k, v in record.items() if v is not _DROP})


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (pickle.dumps({"t": None, "f": queue.RUN_JOB, "a": ("job_1",), "k": {}, "et": 1}), "JSON"),
        (pickle.dumps(_Marker()), "JSON"),
        (pickle.dumps(_Marker(), protocol=0), "JSON"),
        (b"", "JSON"),
        (b'["job_1"]', "record"),
        (_record(extra=1), "record"),
        (_record(et=_DROP), "record"),
        (_record(f="os.system"), "call"),
        (_record(k={"job_id": "job_1"}), "call"),
        (_record(a=[]), "argument"),
        (_record(a=["job_1", "job_2"]), "argument"),
        (_record(a=[{"id": "job_1"}]), "argument"),
        (_record(a=["x" * 65]), "argument"),
        (_record(a=["job_2"]), "another job"),
        (_record(et="1"), "number"),
        (_record(et=True), "number"),
        (_record(t="1"), "number"),
    ],
)
def test_anything_else_is_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(queue.RefusedPayload, match=reason):
        queue.load_job(payload, "job_1")


def test_a_failed_jobs_result_serializes_as_text() -> None:
    """arq serializes a failed job's exception with the job serializer."""
    assert orjson.loads(queue.dump_record({"r": ValueError("boom"), "a": ("job_1",)})) == {
        "r": "boom",
        "a": ["job_1"],
    }
