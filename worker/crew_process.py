"""The child side of crew execution: a process that runs one crew at a time.

The worker keeps these children warm and kills one to stop its crew for real (timeout,
cancel). They are started by the forkserver, which imports this module, and so CrewAI,
once: a child starts in milliseconds instead of paying CrewAI's multi-second import.
"""

import os

# Before CrewAI is imported: it must not reach the network on its own (LiteLLM, its
# fallback for models without a native provider, would fetch a price list at import). A
# deployment may still opt back in by setting these variables itself.
for _name, _value in (
    ("CREWAI_DISABLE_TELEMETRY", "true"),
    ("CREWAI_TRACING_ENABLED", "false"),
    ("CREWAI_DISABLE_VERSION_CHECK", "true"),
    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
):
    os.environ.setdefault(_name, _value)

import signal  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402
from typing import Any  # noqa: E402

import crewai  # noqa: E402, F401  (the point of the forkserver preload)
from crewai.crews.crew_output import CrewOutput  # noqa: E402

from schemas.jobs import ErrorCode, JobResult, TaskResult  # noqa: E402
from shared.crews import CrewConfigError  # noqa: E402
from shared.settings import OFFLINE_MODEL  # noqa: E402
from worker.crew_builder import build_crew  # noqa: E402
from worker.crew_protocol import (  # noqa: E402
    CrewFailed,
    CrewFinished,
    RunRequest,
    TaskFinished,
)
from worker.errors import is_transient  # noqa: E402


def _structured(output: Any) -> dict[str, Any] | None:
    if getattr(output, "pydantic", None) is not None:
        return output.pydantic.model_dump(mode="json")  # type: ignore[no-any-return]
    json_dict = getattr(output, "json_dict", None)
    return dict(json_dict) if json_dict else None


def _task_result(output: Any) -> TaskResult:
    return TaskResult(
        name=output.name, agent=output.agent, raw=output.raw, structured=_structured(output)
    )


def run_one(request: RunRequest, conn: Connection) -> CrewFinished | CrewFailed:
    def on_task(output: Any) -> None:
        conn.send(TaskFinished(_task_result(output)))

    try:
        built = build_crew(
            request.spec,
            request.default_model,
            task_callback=on_task,
            llm_retry_attempts=request.llm_retry_attempts,
            llm_retry_max_wait=request.llm_retry_max_wait,
        )
        output = built.crew.kickoff(inputs=request.inputs)
        assert isinstance(output, CrewOutput)  # crewq never asks for a streaming kickoff
    except CrewConfigError as exc:
        return CrewFailed(ErrorCode.CREW_CONFIG_ERROR, str(exc), transient=False)
    except Exception as exc:
        transient = is_transient(exc)
        return CrewFailed(
            ErrorCode.LLM_UNAVAILABLE if transient else ErrorCode.CREW_ERROR,
            f"{type(exc).__name__}: {exc}"[:2000],
            transient=transient,
            traceback=traceback.format_exc(limit=20)[-8000:],
        )
    return CrewFinished(
        JobResult(
            raw=output.raw,
            structured=_structured(output),
            tasks=[_task_result(t) for t in output.tasks_output],
            models=built.models,
            offline=built.models == [OFFLINE_MODEL],
        ),
        output.token_usage.model_dump() if output.token_usage else None,
    )


def child_main(conn: Connection) -> None:
    """Serve run requests until the parent sends None or goes away."""
    # CrewAI warns that a task callback cannot be checkpointed; crewq never checkpoints.
    warnings.filterwarnings("ignore", message="function callbacks cannot be serialized")
    # Ctrl-C in a terminal reaches the whole process group; the worker decides when
    # children stop, so they ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        conn.send(run_one(request, conn))
