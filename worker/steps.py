"""The steps of a running attempt, as its crew process reports them, recorded: a job event
each (`task.started`, `task.completed`, `tool.completed`, `llm.completed`, `llm.throttled`,
`job.resumed`), the job's `progress` and running `token_usage`, metrics, a span each under
the job's span, so one trace runs from the submitting request through every task, model and
tool call, and the crew's checkpoints (worker/checkpoints.py)."""

import logging
from typing import Any

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from schemas.events import (
    EventType,
    LlmCompleted,
    LlmThrottled,
    TaskCompleted,
    TaskStarted,
    ToolCompleted,
)
from schemas.jobs import Progress, Spent, Usage
from shared.domain.prices import Prices
from shared.runtime import metrics
from shared.runtime.limits import DEFAULT_MAX_OUTPUT_BYTES, bound_task
from shared.runtime.tracing import tracer
from shared.store import job_attempts
from shared.store.checkpoints import Checkpoint
from worker.checkpoints import CheckpointKeeper
from worker.crew.protocol import (
    Checkpointed,
    LlmCalled,
    NotResumed,
    Resumed,
    Step,
    TaskBegan,
    TaskFinished,
    Throttled,
    ToolCalled,
    Unthrottled,
)

log = logging.getLogger(__name__)


def _ms(started_ns: int, ended_ns: int) -> int:
    return max(0, (ended_ns - started_ns) // 1_000_000)


class StepRecorder:
    """Records one attempt's steps in the order its crew made them. The caller runs it in
    the job's span (the parent of the spans it makes) and closes it when the attempt ends."""

    def __init__(
        self,
        db: asyncpg.Pool,
        claim: job_attempts.Claim,
        keeper: CheckpointKeeper,
        prices: Prices,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> None:
        self.db = db
        self.claim = claim
        self.keeper = keeper
        self.prices = prices
        # What the job has spent on models over all its attempts (a budget counts them all).
        self.usage = claim.usage.model_copy(deep=True) if claim.usage else Usage()
        self.max_output_bytes = max_output_bytes  # of a task's output in its event
        self.progress = Progress(completed_tasks=0, total_tasks=0, current_task=None)
        self.tokens = {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
            "successful_requests": 0,
        }
        self._task_spans: dict[str, Span] = {}

    async def record(self, step: Step) -> None:
        job_id, attempt = self.claim.job_id, self.claim.attempt
        match step:
            case TaskBegan():
                self._task_spans[step.name] = tracer.start_span(
                    f"task {step.name}",
                    start_time=step.at_ns,
                    attributes={"crewq.task": step.name, "crewai.agent": step.agent or ""},
                )
                self.progress = self.progress.model_copy(
                    update={"total_tasks": step.total, "current_task": step.name}
                )
                await self._write(
                    EventType.TASK_STARTED,
                    TaskStarted(
                        job_id=job_id,
                        attempt=attempt,
                        task=step.name,
                        agent=step.agent,
                        index=step.index,
                        total_tasks=step.total,
                    ),
                    progress=self.progress,
                )
            case TaskFinished():
                span = self._task_spans.pop(step.task.name or "", None)
                if span is not None:
                    span.end(end_time=step.at_ns)
                self.progress = self.progress.model_copy(
                    update={
                        "completed_tasks": self.progress.completed_tasks + 1,
                        "current_task": None,
                    }
                )
                await self._write(
                    EventType.TASK_COMPLETED,
                    TaskCompleted(
                        job_id=job_id,
                        attempt=attempt,
                        # Cut as the job's stored result will be, and marked the same way.
                        task=bound_task(step.task, self.max_output_bytes),
                    ),
                    progress=self.progress,
                )
            case ToolCalled():
                self._span(
                    f"tool {step.tool}",
                    step.task,
                    step.started_ns,
                    step.ended_ns,
                    step.error,
                    {"crewai.tool": step.tool, "crewai.tool.from_cache": step.from_cache},
                )
                await self._write(
                    EventType.TOOL_COMPLETED,
                    ToolCompleted(
                        job_id=job_id,
                        attempt=attempt,
                        task=step.task,
                        agent=step.agent,
                        tool=step.tool,
                        input=step.input,
                        output=step.output,
                        duration_ms=_ms(step.started_ns, step.ended_ns),
                        from_cache=step.from_cache,
                        error=step.error,
                    ),
                )
            case LlmCalled():
                self._span(
                    f"llm {step.model}",
                    step.task,
                    step.started_ns,
                    step.ended_ns,
                    step.error,
                    {
                        "gen_ai.request.model": step.model,
                        "gen_ai.usage.input_tokens": step.prompt_tokens,
                        "gen_ai.usage.output_tokens": step.completion_tokens,
                    },
                )
                metrics.llm_called(
                    step.model, step.prompt_tokens, step.completion_tokens, failed=bool(step.error)
                )
                if step.error is None:
                    self.tokens["prompt_tokens"] += step.prompt_tokens
                    self.tokens["completion_tokens"] += step.completion_tokens
                    self.tokens["total_tokens"] += step.prompt_tokens + step.completion_tokens
                    self.tokens["successful_requests"] += 1
                self._spend(step)
                await self._write(
                    EventType.LLM_COMPLETED,
                    LlmCompleted(
                        job_id=job_id,
                        attempt=attempt,
                        task=step.task,
                        agent=step.agent,
                        model=step.model,
                        prompt_tokens=step.prompt_tokens,
                        completion_tokens=step.completion_tokens,
                        duration_ms=_ms(step.started_ns, step.ended_ns),
                        error=step.error,
                    ),
                    token_usage=dict(self.tokens),
                    usage=self.usage,
                )
            case Checkpointed():
                await self.keeper.keep(
                    self.claim, Checkpoint(step.tasks_done, step.task, False, step.state)
                )
            case Resumed():
                metrics.RESUMES.labels(self.claim.crew).inc()
                self.progress = self.progress.model_copy(
                    update={"completed_tasks": step.tasks_done}
                )
                log.info(
                    "job %s attempt %d: resumed after task %r (%d done)",
                    job_id,
                    attempt,
                    step.after_task,
                    step.tasks_done,
                )
                try:
                    await job_attempts.record_resume(
                        self.db, self.claim, step.after_task, step.tasks_done
                    )
                except Exception as exc:  # best effort, as every step
                    log.warning("job %s: its resume not recorded: %s", job_id, exc)
            case NotResumed():
                self.keeper.not_restored(self.claim, step.reason)
            case Throttled():
                metrics.llm_throttled(step.model, step.waited_s)
                await self._write(
                    EventType.LLM_THROTTLED,
                    LlmThrottled(
                        job_id=job_id,
                        attempt=attempt,
                        model=step.model,
                        waited_ms=round(step.waited_s * 1000),
                    ),
                )
            case Unthrottled():
                metrics.LLM_UNTHROTTLED.labels(step.model).inc()

    def _spend(self, call: LlmCalled) -> None:
        """Add a model call to the job's usage, in total and for its task."""
        cost = self.prices.cost(call.model, call.prompt_tokens, call.completion_tokens)
        metrics.LLM_COST.labels(call.model).inc(cost)
        task = self.usage.tasks.setdefault(call.task or "", Spent())
        for spent in (self.usage, task):
            spent.prompt_tokens += call.prompt_tokens
            spent.completion_tokens += call.completion_tokens
            spent.total_tokens += call.prompt_tokens + call.completion_tokens
            spent.cost_usd += cost
            spent.llm_calls += 1

    def _span(
        self,
        name: str,
        task: str | None,
        started_ns: int,
        ended_ns: int,
        error: str | None,
        attributes: dict[str, Any],
    ) -> None:
        """A finished call's span, under its task's span when that is open."""
        parent = self._task_spans.get(task or "")
        context = trace.set_span_in_context(parent) if parent is not None else None
        span = tracer.start_span(
            name, context=context, start_time=started_ns, attributes=attributes
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=ended_ns)

    async def _write(
        self,
        type: EventType,
        data: Any,
        *,
        progress: Progress | None = None,
        token_usage: dict[str, Any] | None = None,
        usage: Usage | None = None,
    ) -> None:
        try:
            await job_attempts.record_step(
                self.db,
                self.claim,
                type,
                data,
                progress=progress,
                token_usage=token_usage,
                usage=usage,
                max_output_bytes=self.max_output_bytes,
            )
        except Exception as exc:
            # Steps are best effort; the job's outcome is not.
            log.warning("job %s: %s not recorded: %s", self.claim.job_id, type, exc)

    def close(self) -> None:
        """End the spans of tasks that never finished (the crew failed, timed out, or was
        stopped)."""
        for span in self._task_spans.values():
            span.set_status(Status(StatusCode.ERROR, "the task did not finish"))
            span.end()
        self._task_spans.clear()
