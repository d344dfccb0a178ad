"""The per-model limits: the limiter's Lua scripts against real Redis (worker/crew/
model_limits.py) and the `model_limits` table (shared/store/model_limits.py)."""

import threading
import time

import asyncpg
import pytest
import redis

from shared.runtime.model_limits import ModelLimit, merged
from shared.store import model_limits
from worker.crew.model_limits import Limiter, keys
from worker.crew.protocol import Step, Throttled, Unthrottled

WINDOW_MS = 1000  # the limiter's minute, shortened so a test sees several windows
MODEL = "openai/test-model"


def _limiter(url: str, limit: ModelLimit, steps: list[Step] | None = None) -> Limiter:
    limiter = Limiter(url, window_ms=WINDOW_MS)
    sink = steps if steps is not None else []
    limiter.begin({MODEL: limit}, sink.append)
    return limiter


def _most_in_any_window(times: list[float], window_s: float) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + window_s) for i, start in enumerate(times))


def test_concurrent_acquirers_never_exceed_the_limit_in_any_window(redis_url: str) -> None:
    # Two limiters: two crew processes of two workers, each with several threads.
    limiters = [_limiter(redis_url, ModelLimit(rpm=10)) for _ in range(2)]
    admitted: list[float] = []
    lock = threading.Lock()

    def calls(limiter: Limiter) -> None:
        for _ in range(5):
            limiter.acquire(MODEL, "a prompt")
            with lock:
                admitted.append(time.monotonic())

    threads = [threading.Thread(target=calls, args=(limiters[i % 2],)) for i in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(admitted) == 40  # every call went ahead in the end
    # Measured here, after each answer: Redis's own times are up to a round trip earlier,
    # so a window a little shorter than the limiter's must hold no more than the limit.
    assert _most_in_any_window(admitted, WINDOW_MS / 1000 - 0.05) <= 10
    # 40 calls at 10 a window: at least three windows went by.
    assert time.monotonic() - started >= 3 * WINDOW_MS / 1000 - 0.05


def test_a_waiting_call_reports_how_long_it_waited(redis_url: str) -> None:
    steps: list[Step] = []
    limiter = _limiter(redis_url, ModelLimit(rpm=1), steps)
    first = limiter.acquire(MODEL, "x")
    second = limiter.acquire(MODEL, "x")
    assert first.waited_s < 0.2 and second.waited_s >= 0.8
    assert steps == [Throttled(MODEL, second.waited_s)]


def test_tokens_are_reserved_and_settled(redis_url: str) -> None:
    limiter = _limiter(redis_url, ModelLimit(tpm=100))
    prompt = "x" * 360  # 90 tokens reserved
    first = limiter.acquire(MODEL, prompt)
    assert first.reserved == 90
    # The call used 5 tokens: 95 free again at once, so the next one does not wait.
    limiter.settle(first, 5)
    assert limiter.acquire(MODEL, prompt).waited_s < 0.2
    # Unsettled, 95 of 100 are held: a third waits for the window to move on.
    assert limiter.acquire(MODEL, prompt).waited_s >= 0.5


def test_tokens_leaving_the_window_are_given_back(redis_url: str) -> None:
    limiter = _limiter(redis_url, ModelLimit(tpm=100))
    held = keys(MODEL)[3]
    client = redis.Redis.from_url(redis_url)
    settled = limiter.acquire(MODEL, "x" * 200)  # 50 reserved
    limiter.settle(settled, 30)
    limiter.acquire(MODEL, "x" * 160)  # 40 more
    assert client.get(held) == b"70"
    time.sleep(WINDOW_MS / 1000 + 0.05)
    limiter.acquire(MODEL, "x" * 400)  # both gone from the window: 100 fits alone
    assert client.get(held) == b"100"
    client.close()


def test_a_call_larger_than_the_limit_runs_alone(redis_url: str) -> None:
    limiter = _limiter(redis_url, ModelLimit(tpm=10))
    assert limiter.acquire(MODEL, "y" * 400).waited_s < 0.2  # 100 tokens > 10: still runs
    assert limiter.acquire(MODEL, "y" * 4).waited_s >= 0.5  # ... and nothing beside it


def test_retry_after_pauses_the_model_for_every_process(redis_url: str) -> None:
    steps: list[Step] = []
    refused, other = _limiter(redis_url, ModelLimit()), _limiter(redis_url, ModelLimit(), steps)
    refused.pause(MODEL, 0.6)
    refused.pause(MODEL, 0.1)  # a shorter Retry-After later does not cut the pause
    ticket = other.acquire(MODEL, "z")
    assert 0.5 <= ticket.waited_s < 2
    assert steps == [Throttled(MODEL, ticket.waited_s)]
    # Another model is not paused.
    assert other.acquire("openai/other", "z").waited_s < 0.2


def test_limits_live_under_the_models_keys(redis_url: str) -> None:
    limiter = _limiter(redis_url, ModelLimit(rpm=5, tpm=1000))
    limiter.acquire(MODEL, "hello")
    client = redis.Redis.from_url(redis_url)
    requests, tokens, _, held = keys(MODEL)
    assert requests == f"crewq:model:{MODEL}:requests"
    assert client.zcard(requests) == 1 and client.zcard(tokens) == 1
    assert client.get(held) == b"1"  # "hello": 5 characters, one token reserved
    ttl = client.pttl(requests)
    assert isinstance(ttl, int) and 0 < ttl <= WINDOW_MS + 1000  # gone a window after its last
    client.close()


def test_redis_away_calls_proceed_unthrottled() -> None:
    steps: list[Step] = []
    limiter = Limiter("redis://127.0.0.1:1/0", window_ms=WINDOW_MS)
    limiter.begin({MODEL: ModelLimit(rpm=1)}, steps.append)
    for _ in range(3):
        ticket = limiter.acquire(MODEL, "p")
        limiter.settle(ticket, 10)
    limiter.pause(MODEL, 5)  # nothing to pause in: no error either
    assert steps == [Unthrottled(MODEL)] * 3


async def test_stored_limits_set_keep_and_unset(db: asyncpg.Pool) -> None:
    assert await model_limits.all_limits(db) == {}
    set_ = await model_limits.set_limit(db, MODEL, 60, None)
    assert set_.limit == ModelLimit(rpm=60)
    # A dimension not given is kept; one given replaces.
    assert (await model_limits.set_limit(db, MODEL, None, 5000)).limit == ModelLimit(
        rpm=60, tpm=5000
    )
    # NO_LIMIT takes one away.
    assert (await model_limits.set_limit(db, MODEL, model_limits.NO_LIMIT, None)).limit == (
        ModelLimit(tpm=5000)
    )
    await model_limits.set_limit(db, "anthropic/b", 10, 20)
    assert await model_limits.all_limits(db) == {
        "anthropic/b": ModelLimit(rpm=10, tpm=20),
        MODEL: ModelLimit(tpm=5000),
    }
    assert await model_limits.unset(db, MODEL)
    assert not await model_limits.unset(db, MODEL)
    assert list(await model_limits.all_limits(db)) == ["anthropic/b"]


async def test_stored_rows_win_over_the_setting(db: asyncpg.Pool) -> None:
    configured = {MODEL: ModelLimit(rpm=100, tpm=1000), "other": ModelLimit(rpm=5)}
    await model_limits.set_limit(db, MODEL, 60, None)
    stored = await model_limits.all_limits(db)
    assert merged(configured, stored) == {MODEL: ModelLimit(rpm=60), "other": ModelLimit(rpm=5)}
    # A row with nothing limited lifts the setting's limits for its model.
    await model_limits.set_limit(db, MODEL, 0, 0)
    assert merged(configured, await model_limits.all_limits(db)) == {"other": ModelLimit(rpm=5)}


async def test_the_table_refuses_nonsense(db: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("INSERT INTO model_limits (model, rpm) VALUES ('m', -1)")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("INSERT INTO model_limits (model) VALUES ('')")


class _RateLimited(Exception):
    """What an SDK raises on a 429: the response with its status and headers."""

    def __init__(self) -> None:
        super().__init__("429 Too Many Requests")
        self.status_code = 429
        self.response = type("R", (), {"status_code": 429, "headers": {"retry-after": "0.6"}})()


def test_an_attempts_429_pauses_the_model_for_the_next(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llm_retry's attempt: a provider's 429 with Retry-After sets the shared pause, which
    the next attempt (of any process) waits out."""
    from worker.crew import model_limits as module
    from worker.crew.llm import OfflineLLM
    from worker.crew.llm_retry import _limited_call

    steps: list[Step] = []
    monkeypatch.setattr(module, "_limiter", _limiter(redis_url, ModelLimit(), steps))
    llm = OfflineLLM(model="gpt-x")  # any instance: the attempt's call is given apart

    def refused(*args: object) -> str:
        raise _RateLimited()

    with pytest.raises(_RateLimited):
        _limited_call(llm, MODEL, refused, "a prompt")
    started = time.monotonic()
    assert _limited_call(llm, MODEL, lambda *args: "answer", "a prompt") == "answer"
    assert time.monotonic() - started >= 0.5
    assert [type(s) for s in steps] == [Throttled]
