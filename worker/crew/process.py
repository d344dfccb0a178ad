"""The child side of crew execution: a process that runs one crew at a time.

The worker keeps these children warm and kills one to stop its crew for real (timeout,
cancel). They are started by the forkserver, which imports this module, and so CrewAI,
once, with the provider modules of the models the worker's crews use
(`llm_providers.crewai_modules`): a child starts in milliseconds instead of paying CrewAI's
multi-second import. CrewAI still does a second's worth of set-up on the first kickoff of a
process (lazy imports, prompt templates, its event bus), so a new child runs a throwaway
offline kickoff, and builds the default model's client, before it tells the worker it is
ready (`Ready`): the worker offers a child to a job only then.
"""

import os
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from multiprocessing.connection import Connection

import worker.crew.offline  # noqa: F401  (first: before CrewAI is imported)
from worker.crew.tls import share_default_context

share_default_context()

import crewai  # noqa: E402, F401  (the point of the forkserver preload)
from crewai import Agent, Crew, Task  # noqa: E402
from crewai.core.providers.human_input import set_provider  # noqa: E402
from crewai.crews.crew_output import CrewOutput  # noqa: E402
from crewai_core import lock_store  # noqa: E402

from schemas.jobs import ErrorCode, JobResult  # noqa: E402
from shared.domain.crews import CrewConfigError  # noqa: E402
from shared.domain.prices import Prices  # noqa: E402
from shared.runtime.logs import configure, log_context  # noqa: E402
from shared.runtime.settings import OFFLINE_MODEL, get_settings  # noqa: E402
from worker.crew.budget import BudgetExceeded, BudgetGuard  # noqa: E402
from worker.crew.builder import DEFAULT_PROMPT, build_crew  # noqa: E402
from worker.crew.checkpoint import (  # noqa: E402
    AskPerson,
    InputRequired,
    NotRestorable,
    Review,
    approve,
    restore,
    state_of,
    task_label,
)
from worker.crew.errors import is_transient  # noqa: E402
from worker.crew.events import StepReporter, structured_output, task_result  # noqa: E402
from worker.crew.flows import flow_class, outcome_of, run_flow  # noqa: E402
from worker.crew.llm import make_llm  # noqa: E402
from worker.crew.model_limits import limiter  # noqa: E402
from worker.crew.protocol import (  # noqa: E402
    Accepted,
    CheckCrews,
    Checkpointed,
    ChildMessage,
    CrewFailed,
    CrewFinished,
    CrewsChecked,
    InputNeeded,
    NotResumed,
    Ready,
    Resumed,
    RunRequest,
    Step,
    TaskFinished,
)


def _take_up(
    crew: Crew, request: RunRequest, send: Callable[[Step], None]
) -> tuple[Review, str] | None:
    """Resume `crew` from the request's checkpoint, if it has one, saying how (`Resumed`,
    or `NotResumed` and from its first task). Returns the task to do again with the
    person's feedback, when they rejected its answer."""
    if request.resume is None:
        return None
    try:
        restored = restore(crew, request.resume)
    except NotRestorable as exc:  # the crew is left as built: it runs from its first task
        send(NotResumed(str(exc)))
        return None
    review, answer = restored.review, request.answer
    tasks_done, after = restored.tasks_done, restored.after_task
    redo = None
    if review is not None and answer is not None and answer["task_index"] == review.task_index:
        if answer["approve"]:
            approve(crew, review)
            tasks_done = review.task_index
            after = task_label(crew.tasks[tasks_done - 1], tasks_done)
            # The approved answer is the task's output: reported as a finished task (CrewAI
            # emits no event for an output put back), and kept, so a later attempt does
            # not need the answer again.
            output = crew.tasks[tasks_done - 1].output
            result = task_result(output).model_copy(update={"name": after})
            send(TaskFinished(result, time.time_ns()))
            if request.checkpoints:
                send(Checkpointed(tasks_done, after, state_of(crew, tasks_done)))
        else:
            redo = (review, str(answer["feedback"]))
    if tasks_done:
        send(Resumed(tasks_done, after))
    return redo


def _failed(exc: Exception) -> CrewFailed:
    transient = is_transient(exc)
    return CrewFailed(
        ErrorCode.LLM_UNAVAILABLE if transient else ErrorCode.CREW_ERROR,
        f"{type(exc).__name__}: {exc}"[:2000],
        transient=transient,
        traceback=traceback.format_exc(limit=20)[-8000:],
    )


@lru_cache(maxsize=1)
def _prices() -> Prices:
    return Prices(get_settings().model_prices)


def over_budget(exc: BudgetExceeded) -> CrewFailed:
    # Not transient: another attempt with the same budget would stop at the same call.
    return CrewFailed(ErrorCode.BUDGET_EXCEEDED, exc.reason, transient=False)


def run_flow_job(
    request: RunRequest, steps: StepReporter, send: Callable[[Step], None]
) -> CrewFinished | CrewFailed | InputNeeded:
    try:
        cls = flow_class(request.spec)
        methods = len(cls.flow_definition().methods)
        guard = BudgetGuard(request.budget, request.spent, _prices(), request.caps)
        with steps.watching_flow(methods) as finished, guard.guarding():
            returned, models = run_flow(request, cls, send)
        return outcome_of(returned, models, request.checkpoints, finished)
    except CrewConfigError as exc:
        return CrewFailed(ErrorCode.CREW_CONFIG_ERROR, str(exc), transient=False)
    except BudgetExceeded as exc:
        return over_budget(exc)
    except Exception as exc:
        return _failed(exc)


def run_one(
    request: RunRequest, steps: StepReporter, send: Callable[[Step], None]
) -> CrewFinished | CrewFailed | InputNeeded:
    if request.spec.flow:
        return run_flow_job(request, steps, send)
    crew: Crew | None = None
    prompts: dict[str, str] = {}
    try:
        built = build_crew(
            request.spec,
            request.default_model,
            llm_retry_attempts=request.llm_retry_attempts,
            llm_retry_max_wait=request.llm_retry_max_wait,
        )
        crew, prompts = built.crew, built.prompts
        redo = _take_up(crew, request, send)
        set_provider(AskPerson(crew, redo))
        guard = BudgetGuard(request.budget, request.spent, _prices(), request.caps)
        with steps.watching(crew, checkpoints=request.checkpoints), guard.guarding():
            output = crew.kickoff(inputs=request.inputs)
        assert isinstance(output, CrewOutput)  # crewq never asks for a streaming kickoff
    except CrewConfigError as exc:
        return CrewFailed(ErrorCode.CREW_CONFIG_ERROR, str(exc), transient=False)
    except InputRequired as exc:
        assert crew is not None
        return _needs_input(crew, exc.review, request.checkpoints, prompts)
    except BudgetExceeded as exc:
        return over_budget(exc)
    except Exception as exc:
        return _failed(exc)
    return CrewFinished(
        JobResult(
            raw=output.raw,
            structured=structured_output(output),
            tasks=[task_result(t) for t in output.tasks_output],
            models=built.models,
            offline=built.models == [OFFLINE_MODEL],
        ),
        output.token_usage.model_dump() if output.token_usage else None,
    )


def _needs_input(
    crew: Crew, review: Review, checkpoints: bool, prompts: dict[str, str]
) -> InputNeeded | CrewFailed:
    if not checkpoints:
        return CrewFailed(
            ErrorCode.CREW_CONFIG_ERROR,
            "a task asks for a person's input, and this worker cannot keep the crew's state"
            " while it waits: set CREWQ_CHECKPOINT_KEY",
            transient=False,
        )
    task = crew.tasks[review.task_index - 1]
    return InputNeeded(
        task=task_label(task, review.task_index),
        task_index=review.task_index,
        output=review.output,
        prompt=prompts.get(task.name or "", DEFAULT_PROMPT),
        tasks_done=review.task_index - 1,
        state=state_of(crew, review.task_index - 1, review),
    )


def check_crews(request: CheckCrews) -> CrewsChecked:
    errors = {}
    for spec in request.specs:
        try:
            if spec.flow:
                flow_class(spec)
            else:
                build_crew(spec, OFFLINE_MODEL)
        except Exception as exc:
            errors[spec.name] = f"{type(exc).__name__}: {exc}"[:500]
    return CrewsChecked(errors)


def warm_up(default_model: str) -> Ready:
    """What a crew process does once before its first job: a kickoff of a one-agent crew on
    the offline model (CrewAI's first-kickoff set-up, with no network), and the default
    model's LLM object with its clients (the provider's lazy imports and TLS context)."""
    started = time.perf_counter()
    try:
        agent = Agent(
            role="Warm-up",
            goal="Warm up",
            backstory="-",
            llm=make_llm(OFFLINE_MODEL),
            verbose=False,
        )
        task = Task(description="Warm up.", expected_output="Anything.", agent=agent)
        Crew(agents=[agent], tasks=[task], verbose=False).kickoff()
        llm = make_llm(default_model)
        client = getattr(llm, "_get_sync_client", None)
        if client is not None:  # the OpenAI SDK builds its resources on first use
            _ = client().chat.completions
    except Exception as exc:  # a cold first job is slower, not wrong: serve anyway
        return Ready(time.perf_counter() - started, f"{type(exc).__name__}: {exc}"[:500])
    return Ready(time.perf_counter() - started, None)


_LOCKS: dict[str, threading.Lock] = {}


@contextmanager
def _thread_lock(name: str, *, timeout: float) -> Iterator[None]:
    lock = _LOCKS.setdefault(name, threading.Lock())
    if not lock.acquire(timeout=timeout):
        raise TimeoutError(f"CrewAI's lock {name!r} not taken in {timeout:.0f} s")
    try:
        yield
    finally:
        lock.release()


def use_private_storage(directory: str) -> None:
    """Give this process CrewAI storage of its own, under `directory` (absolute).

    Every kickoff writes its task outputs to a SQLite file (for `crewai replay`, which
    crewq does not use) under a file lock that a waiter polls every 250 ms. Shared by a
    worker's crew processes, that file made concurrent kickoffs wait on each other: one
    job in fifteen took 250-300 ms longer at two crews at a time. With a file of its own,
    the process needs only a lock among its own threads (CrewAI's `set_lock_backend`)."""
    # An absolute CREWAI_STORAGE_DIR is used as is: appdirs joins it to its base.
    os.environ["CREWAI_STORAGE_DIR"] = directory
    lock_store.set_lock_backend(_thread_lock)


def child_main(conn: Connection, storage_dir: str) -> None:
    """Serve run requests until the parent sends None or goes away."""
    use_private_storage(storage_dir)
    # CrewAI warns that a task callback cannot be checkpointed; crewq does not use CrewAI's
    # checkpoints (worker/crew/checkpoint.py says why).
    warnings.filterwarnings("ignore", message="function callbacks cannot be serialized")
    sending = threading.Lock()  # steps are sent from CrewAI's event thread, outcomes from here

    def send(message: ChildMessage | CrewsChecked | Ready) -> None:
        with sending:
            conn.send(message)

    steps = StepReporter(send)
    steps.install()
    settings = get_settings()  # the worker's environment, through the forkserver
    configure(settings.log_level, role="crew", fmt=settings.logs_as)
    # Ctrl-C in a terminal reaches the whole process group; the worker decides when
    # children stop, so they ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    send(warm_up(settings.default_model()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        if isinstance(request, CheckCrews):
            send(check_crews(request))
        else:
            send(Accepted())
            limiter().begin(request.model_limits, send)
            with log_context(job_id=request.job_id, tenant_id=request.tenant_id):
                send(run_one(request, steps, send))
