"""CrewAI Flows as jobs, inside a crew process: the same timeout, cancel, retries, step
events and results as a crew, their `@persist` state kept in Postgres, and their
`@human_feedback` pausing the job in `awaiting_input`.

CrewAI hands a flow's state to a `FlowPersistence`, chosen through its persistence factory
(`set_flow_persistence_factory`; `@persist` binds it when the class is defined). Here that
is `JobFlowStore`, one per process: each state CrewAI saves (after every persisted method)
becomes a checkpoint message to the worker, which seals and stores it as it does a crew's
(worker/checkpoints.py), and an attempt resumes from it. A `@human_feedback` method asks
crewq's `PauseForPerson` provider, which raises CrewAI's `HumanFeedbackPending`: the flow
stops, its pending context is saved with its state, and the job waits for
`POST /v1/jobs/{id}/input`; the answer is handed back through `Flow.from_pending(...)
.resume(feedback)`.

A flow that calls a model uses `self.llm`, which crewq sets to the platform's model (with
its retries, and the offline model for a test key's job) before the flow starts.
"""

import threading
from dataclasses import dataclass
from typing import Any

import orjson
from crewai.flow.async_feedback import HumanFeedbackPending, PendingFeedbackContext
from crewai.flow.flow import Flow
from crewai.flow.flow_config import flow_config
from crewai.flow.persistence import FlowPersistence
from crewai.flow.persistence.factory import set_flow_persistence_factory
from pydantic import BaseModel, PrivateAttr

from schemas.jobs import JobResult, TaskResult
from shared.domain.crews import CrewConfigError, CrewSpec
from shared.runtime.settings import OFFLINE_MODEL
from worker.crew.builder import DEFAULT_PROMPT, load_object
from worker.crew.events import structured_output
from worker.crew.llm import make_llm
from worker.crew.protocol import (
    Checkpointed,
    CrewFinished,
    InputNeeded,
    NotResumed,
    Resumed,
    RunRequest,
)

FORMAT = "flow-1"  # the state's shape; another is not taken up


def _plain(value: Any) -> Any:
    """A state or output as JSON values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return orjson.loads(orjson.dumps(value, default=str))


@dataclass(frozen=True)
class FlowState:
    """A flow's state between attempts: its id, its state, the methods it finished, and
    the feedback it waits for (CrewAI's pending context), if any."""

    flow_id: str
    state: dict[str, Any]
    methods: list[str]
    pending: dict[str, Any] | None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "flow_id": self.flow_id,
                "state": self.state,
                "methods": self.methods,
                "pending": self.pending,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> "FlowState":
        try:
            found = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(found, dict) or found.get("format") != FORMAT:
            raise ValueError(f"not a flow state of format {FORMAT}")
        return cls(found["flow_id"], found["state"], found["methods"], found["pending"])


class JobFlowStore(FlowPersistence):
    """CrewAI's persistence for the flow this process runs now: every state saved becomes
    a checkpoint for the worker to store; the state an attempt resumes from is read back
    from what the worker gave it. CrewAI calls it from its worker threads: hence the lock."""

    persistence_type: str = "JobFlowStore"
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _send: Any = PrivateAttr(default=None)
    _checkpoints: bool = PrivateAttr(default=False)
    _known: FlowState | None = PrivateAttr(default=None)
    _methods: list[str] = PrivateAttr(default_factory=list)

    def begin(self, send: Any, checkpoints: bool, known: FlowState | None) -> None:
        """Serve one job: `known` is the state it resumes from."""
        with self._lock:
            self._send, self._checkpoints, self._known = send, checkpoints, known
            self._methods = list(known.methods) if known else []

    def init_db(self) -> None:
        return None

    def _keep(self, flow_uuid: str, state: dict[str, Any], pending: dict[str, Any] | None) -> None:
        self._known = FlowState(flow_uuid, state, list(self._methods), pending)
        if self._checkpoints and self._send is not None:
            last = self._methods[-1] if self._methods else None
            self._send(Checkpointed(len(self._methods), last, self._known.encode()))

    def save_state(
        self, flow_uuid: str, method_name: str, state_data: dict[str, Any] | BaseModel
    ) -> None:
        with self._lock:
            self._methods.append(method_name)
            self._keep(flow_uuid, _plain(state_data), None)

    def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
        with self._lock:
            known = self._known
        return known.state if known and known.flow_id == flow_uuid else None

    def save_pending_feedback(
        self,
        flow_uuid: str,
        context: PendingFeedbackContext,
        state_data: dict[str, Any] | BaseModel,
    ) -> None:
        with self._lock:
            # Kept here; the worker stores it with the pause (InputNeeded), not before.
            self._known = FlowState(
                flow_uuid, _plain(state_data), list(self._methods), context.to_dict()
            )

    def load_pending_feedback(
        self, flow_uuid: str
    ) -> tuple[dict[str, Any], PendingFeedbackContext] | None:
        with self._lock:
            known = self._known
        if known is None or known.flow_id != flow_uuid or known.pending is None:
            return None
        return known.state, PendingFeedbackContext.from_dict(known.pending)

    def clear_pending_feedback(self, flow_uuid: str) -> None:
        with self._lock:
            if self._known is not None and self._known.flow_id == flow_uuid:
                self._known = FlowState(flow_uuid, self._known.state, self._known.methods, None)

    @property
    def known(self) -> FlowState | None:
        with self._lock:
            return self._known


class PauseForPerson:
    """CrewAI's human feedback provider for flows: never prompts, always pauses."""

    def request_feedback(self, context: PendingFeedbackContext, flow: Flow[Any]) -> str:
        raise HumanFeedbackPending(context=context)


# One per process, bound once: `@persist` takes the factory's answer when its class is
# defined, and a module named as "module:Class" is imported once per process.
STORE = JobFlowStore()
set_flow_persistence_factory(lambda: STORE)
flow_config.hitl_provider = PauseForPerson()


def flow_class(spec: CrewSpec) -> type[Flow[Any]]:
    assert spec.flow is not None
    found = load_object(spec, spec.flow)
    if not (isinstance(found, type) and issubclass(found, Flow)):
        raise CrewConfigError(f"{spec.name}: {spec.flow} is not a CrewAI Flow class")
    return found


def _feedback(answer: dict[str, Any]) -> str:
    """What a flow's `@human_feedback` method receives: the person's words, or what their
    approval or rejection says when they gave none."""
    words = str(answer.get("feedback") or "").strip()
    if words:
        return words
    return "approved" if answer.get("approve", True) else "rejected"


def run_flow(request: RunRequest, cls: type[Flow[Any]], send: Any) -> tuple[Any, list[str]]:
    """Run (or resume) the request's flow, of class `cls` (loaded once per job by the
    caller: loading executes the crew's file), to its end or its next pause: what its
    kickoff or resume returned, and the models it was given."""
    spec = request.spec
    known: FlowState | None = None
    if request.resume is not None:
        try:
            known = FlowState.decode(request.resume)
        except ValueError as exc:
            send(NotResumed(str(exc)))
    STORE.begin(send, request.checkpoints, known)
    model = spec.model_for(None, request.default_model)
    llm = make_llm(
        model,
        retry_attempts=request.llm_retry_attempts,
        retry_max_wait=request.llm_retry_max_wait,
    )
    answer = request.answer
    if known is not None and known.pending is not None and answer is not None:
        flow = cls.from_pending(known.flow_id, STORE)
        flow.llm = llm
        send(Resumed(len(known.methods), known.methods[-1] if known.methods else "start"))
        return flow.resume(_feedback(answer)), [model]
    flow = cls(persistence=STORE)
    flow.llm = llm
    inputs = dict(request.inputs)
    if known is not None:
        # CrewAI's @persist resume: the state is restored by id; the methods run again.
        inputs["id"] = known.flow_id
        if known.methods:
            send(Resumed(len(known.methods), known.methods[-1]))
    return flow.kickoff(inputs=inputs), [model]


def outcome_of(
    returned: Any, models: list[str], checkpoints: bool, tasks: list[TaskResult]
) -> CrewFinished | InputNeeded:
    """The job's outcome from what the flow's kickoff (or resume) returned."""
    if isinstance(returned, HumanFeedbackPending):
        context = returned.context
        known = STORE.known
        assert known is not None and known.pending is not None, "CrewAI saved no pending state"
        if not checkpoints:
            raise CrewConfigError(
                "a flow asks for a person's input, and this worker cannot keep its state"
                " while it waits: set CREWQ_CHECKPOINT_KEY"
            )
        return InputNeeded(
            task=context.method_name,
            task_index=len(known.methods) + 1,
            output=str(_plain(context.method_output)),
            prompt=context.message or DEFAULT_PROMPT,
            tasks_done=len(known.methods),
            state=known.encode(),
        )
    return CrewFinished(
        JobResult(
            raw=returned if isinstance(returned, str) else orjson.dumps(_plain(returned)).decode(),
            structured=structured_output(returned) or _structured(returned),
            tasks=tasks,
            models=models,
            offline=models == [OFFLINE_MODEL],
        ),
        None,
    )


def _structured(value: Any) -> dict[str, Any] | None:
    plain = _plain(value)
    return plain if isinstance(plain, dict) else None
