"""What the workers take from Redis carries no code: a payload placed in arq's queue by
someone who can write to Redis, a pickle above all, is refused and logged, runs nothing,
and the worker goes on with the next job (issue 19, finding 3)."""

import pickle
import time
import uuid
from pathlib import Path

import orjson
from arq.connections import ArqRedis
from arq.constants import job_key_prefix

from shared.runtime import queue
from tests.harness import Platform, eventually


class _CreatesFile:
    """Unpickling this opens `path` for writing, creating it: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


async def _place(redis: ArqRedis, arq_id: str, payload: bytes) -> None:
    """As an intruder with write access would: the job key and the queue entry arq reads,
    and a wake-up so the worker looks now."""
    await redis.set(job_key_prefix + arq_id, payload, px=3_600_000)
    await redis.zadd(queue.QUEUE_NAME, {arq_id: int(time.time() * 1000)})
    await redis.publish(queue.WAKE_CHANNEL, "")


async def test_a_pickled_payload_is_refused_runs_nothing_and_the_worker_goes_on(
    own_stack: Platform, workdir: Path
) -> None:
    await own_stack.start_api()
    worker = await own_stack.start_worker()
    marker = workdir / f"pickle-ran-{uuid.uuid4().hex[:8]}"
    pickled_id = f"job_{uuid.uuid4().hex[:26]}"
    # arq's own record, as arq's default serializer writes it, with a gift in its arguments.
    pickled = pickle.dumps(
        {"t": None, "f": queue.RUN_JOB, "a": (_CreatesFile(marker),), "k": {}, "et": 1}
    )
    # JSON, but not crewq's record: it calls another function.
    foreign_id = f"job_{uuid.uuid4().hex[:26]}"
    foreign = orjson.dumps({"t": None, "f": "shutdown", "a": [foreign_id], "k": {}, "et": 1})
    refused = f"job {pickled_id}: refused its queue payload, not JSON"
    redis = await queue.connect(own_stack.redis_url)
    try:
        await _place(redis, pickled_id, pickled)

        async def taken_up() -> bool:
            return marker.exists() or refused in worker.log()

        await eventually(taken_up, what="the worker taking the pickle up")
        assert not marker.exists(), "unpickling the payload ran code in the worker"
        assert refused in worker.log()
        await _place(redis, foreign_id, foreign)
        await worker.wait_for_log(f"job {foreign_id}: refused its queue payload, not a call")

        # Dropped, not left to be taken up again and again.
        async def gone() -> bool:
            held = await queue.states(redis, [pickled_id, foreign_id])
            return not any(state.held for state in held)

        await eventually(gone, what="the refused payloads dropped")

        # The worker did not crash or wedge: the next job runs as usual.
        job = await own_stack.submit("echo", {"message": "after the intruder"})
        done = await own_stack.wait_for_status(job["id"], {"completed", "failed"})
        assert done["status"] == "completed", done
    finally:
        await redis.aclose()
    assert worker.popen.poll() is None, worker.log()[-4000:]
    assert not marker.exists(), "unpickling the payload ran code in the worker"


async def test_a_job_queued_the_old_way_is_refused_then_queued_again_and_runs(
    own_stack: Platform,
) -> None:
    """A job an earlier crewq queued as a pickle (arq's default record, harmless) is not
    run from it; it is still pending in Postgres, so the reconciler queues it again, as
    JSON, and it completes once."""
    await own_stack.start_api()
    job = await own_stack.submit("echo", {"message": "queued before the upgrade"})
    redis = await queue.connect(own_stack.redis_url)
    try:
        old = pickle.dumps(
            {"t": None, "f": queue.RUN_JOB, "a": (job["id"],), "k": {}, "et": int(time.time())}
        )
        assert await redis.set(job_key_prefix + job["id"], old, xx=True)  # it was queued
        worker = await own_stack.start_worker()
        await worker.wait_for_log(f"job {job['id']}: refused its queue payload, not JSON")
        done = await own_stack.wait_for_status(job["id"], {"completed", "failed"})
        assert done["status"] == "completed" and done["attempt"] == 1, done
    finally:
        await redis.aclose()
