"""One trace from the submitting HTTP request through the queue, each task, model and tool
call of the crew, to the webhook delivery.

The API, a worker and a dispatcher run in this test's own process (each as its real
`serve`), so one in-memory exporter sees every span they make; the crew itself still runs
in a crew process, whose steps the worker turns into spans."""

import asyncio
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api.app import create_app
from crewq.embedded import free_port
from shared.runtime.settings import OFFLINE_MODEL, Settings
from shared.runtime.supervisor import Supervisor
from tests.acceptance.test_webhooks import unique
from tests.fakes import Receiver
from tests.harness import Platform
from worker.dispatcher.main import Dispatcher
from worker.main import WorkerService

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture
async def exporter() -> AsyncIterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    # crewq's tracer (`shared.runtime.tracing.tracer`) follows the global provider once it is set.
    trace.set_tracer_provider(provider)
    yield memory
    memory.clear()


def _settings(platform: Platform) -> Settings:
    return Settings(
        database_url=platform.database_url,
        redis_url=platform.redis_url,
        secret_key=platform.secret_key,
        crews_path=platform.env["CREWQ_CREWS_PATH"],
        api_port=free_port(),
        webhook_allow_http=True,
        webhook_allow_private=True,
        dispatcher_poll_interval=0.5,
        worker_concurrency=1,
        llm_model=OFFLINE_MODEL,  # whatever this machine's environment configures
    )


async def test_one_trace_runs_from_request_to_tasks_llm_calls_and_webhook(
    own_stack: Platform, receiver: Receiver, exporter: InMemorySpanExporter
) -> None:
    settings = _settings(own_stack)
    loop = asyncio.get_running_loop()
    runner = web.AppRunner(create_app(settings, Supervisor()))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.api_port).start()
    worker, dispatcher = WorkerService(settings), Dispatcher(settings)
    serving = [asyncio.create_task(worker.serve()), asyncio.create_task(dispatcher.serve())]
    try:
        hook = unique("traced")
        receiver.configure(hook, secrets=[own_stack.signing_secret])
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{settings.api_port}/v1/jobs",
                json={
                    "crew": "research",
                    "inputs": {"topic": "tracing"},
                    "webhook_url": receiver.url(hook),
                },
                headers=own_stack.headers(),
            ) as response,
        ):
            assert response.status == 202, await response.text()
        [delivered] = await receiver.wait_for(hook, 1, timeout=90)
    finally:
        worker.stopping.set()
        dispatcher._stop()
        await asyncio.gather(*serving)
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    spans = exporter.get_finished_spans()
    [request] = [s for s in spans if s.name == "POST /v1/jobs"]
    trace_id = _ctx(request).trace_id
    [run] = [s for s in spans if s.name == "job.run"]
    tasks = [s for s in spans if s.name.startswith("task ")]
    llm_calls = [s for s in spans if s.name.startswith("llm ")]
    [deliver] = [s for s in spans if s.name == "webhook.deliver"]

    assert {_ctx(s).trace_id for s in [run, *tasks, *llm_calls, deliver]} == {trace_id}
    assert sorted(s.name for s in tasks) == ["task report_task", "task research_task"]
    assert all(s.parent is not None and s.parent.span_id == _ctx(run).span_id for s in tasks)
    task_ids = {_ctx(s).span_id for s in tasks}
    assert len(llm_calls) == 2
    assert all(s.parent is not None and s.parent.span_id in task_ids for s in llm_calls)
    assert all(
        s.attributes is not None and s.attributes["gen_ai.request.model"] == OFFLINE_MODEL
        for s in llm_calls
    )
    # A step's span covers the step: it starts and ends inside its task's.
    by_id = {_ctx(s).span_id: s for s in tasks}
    for call in llm_calls:
        assert call.parent is not None
        parent = by_id[call.parent.span_id]
        assert parent.start_time is not None and parent.end_time is not None
        assert parent.start_time <= (call.start_time or 0) <= (call.end_time or 0)
        assert (call.end_time or 0) <= parent.end_time
    # The receiver was told the same trace.
    assert delivered.headers["traceparent"].split("-")[1] == f"{trace_id:032x}"


def _ctx(span: ReadableSpan) -> trace.SpanContext:
    context = span.get_span_context()
    assert context is not None
    return context
