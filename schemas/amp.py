"""CrewAI AMP's per-crew API as crewq serves it at `/amp/{crew}` (docs/amp.md): the bodies
AMP's clients send and read, the status superset, and the three webhook payloads.

Names are AMP's, camelCase where AMP's are (`taskWebhookUrl`), so an AMP client works
unchanged. Where AMP's documents and its real clients disagree, the answer carries what
both read (see `AmpStatus`)."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import EventType
from schemas.fields import WebhookUrl
from schemas.jobs import MAX_FEEDBACK_CHARS, InputDefault

# An execution id as crewq makes them (a job id); AMP's clients take any such string.
ExecutionId = Annotated[str, Field(min_length=1, max_length=64)]


class DeliveryFormat(StrEnum):
    """The body a webhook delivery carries (checked in SQL too): crewq's event envelope, or
    one of AMP's three payloads, rendered from the stored event when it is sent."""

    CREWQ = "crewq"
    AMP_TASK = "amp_task"  # to a kickoff's taskWebhookUrl
    AMP_STEP = "amp_step"  # to its stepWebhookUrl
    AMP_CREW = "amp_crew"  # to its crewWebhookUrl


# Which of a kickoff's URLs each event goes to, in which AMP format. A request for a person's
# input goes to the task webhook: AMP's HITL guide has the paused task's output arrive there.
AMP_FORMATS: dict[EventType, DeliveryFormat] = {
    EventType.TASK_COMPLETED: DeliveryFormat.AMP_TASK,
    EventType.JOB_INPUT_REQUIRED: DeliveryFormat.AMP_TASK,
    EventType.TOOL_COMPLETED: DeliveryFormat.AMP_STEP,
    EventType.LLM_COMPLETED: DeliveryFormat.AMP_STEP,
    EventType.JOB_COMPLETED: DeliveryFormat.AMP_CREW,
    EventType.JOB_FAILED: DeliveryFormat.AMP_CREW,
    EventType.JOB_CANCELLED: DeliveryFormat.AMP_CREW,
}


class AmpInputs(BaseModel):
    """`GET /amp/{crew}/inputs`."""

    inputs: list[str] = Field(description="The names of the inputs the crew needs.")


class AmpWebhookUrls(BaseModel):
    """The three per-execution webhook URLs AMP's kickoff and resume take (null: none)."""

    # Unknown fields are ignored, not refused: AMP's kickoff has grown fields over time
    # (`webhooks`, `humanInputWebhook`) that crewq does not serve, and a client sending
    # them must still work.
    model_config = ConfigDict(extra="allow", strict=True)

    taskWebhookUrl: WebhookUrl | None = Field(
        default=None, description="Receives each finished task (and each request for input)."
    )
    stepWebhookUrl: WebhookUrl | None = Field(
        default=None, description="Receives each step of an agent: a tool or model call."
    )
    crewWebhookUrl: WebhookUrl | None = Field(
        default=None, description="Receives the execution's end: completed, failed, cancelled."
    )


class AmpKickoff(AmpWebhookUrls):
    """`POST /amp/{crew}/kickoff`."""

    inputs: dict[str, Any] = Field(description="The crew's inputs; `GET /inputs` names them.")
    meta: Any = Field(
        default=None, description="Anything of yours; sent back in every webhook payload."
    )


class AmpKickedOff(BaseModel):
    kickoff_id: str = Field(description="The execution's id: crewq's job id.")


class AmpResume(AmpWebhookUrls):
    """`POST /amp/{crew}/resume`. URLs given replace those of the kickoff; URLs left out are
    kept (AMP forgets them; crewq does not)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    execution_id: ExecutionId = Field(description="The kickoff's `kickoff_id`.")
    task_id: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="The task waiting for a person: its name in the crew."
    )
    human_feedback: Annotated[str, Field(max_length=MAX_FEEDBACK_CHARS)] = Field(
        description="What the person says about the task's output."
    )
    is_approve: bool = Field(
        description="true: the output stands and the crew goes on; false: the task is done"
        " again with the feedback, and asks again."
    )


class AmpResumeStatus(StrEnum):
    RESUMED = "resumed"
    RETRYING = "retrying"


class AmpResumed(BaseModel):
    status: AmpResumeStatus
    message: str


class AmpState(StrEnum):
    """The `state` AMP's real clients read (crewai-tools, Semantic Kernel)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


class AmpStatusValue(StrEnum):
    """The `status` AMP's API reference documents, and its HITL guide's paused state."""

    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"
    PENDING_HUMAN_INPUT = "pending_human_input"


class AmpProgress(BaseModel):
    completed_tasks: int
    total_tasks: int


class AmpTaskResult(BaseModel):
    task_id: str | None = Field(description="The task's name in the crew.")
    output: str
    agent: str | None
    execution_time: float | None = Field(
        default=None, description="Seconds; crewq does not time tasks apart: null."
    )


class AmpHumanInput(BaseModel):
    """What a paused execution waits for: answer it with `POST /resume`."""

    task_id: str = Field(description="The task to name as `task_id` in `POST /resume`.")
    output: str = Field(description="The task's output, for the person to review.")
    prompt: str = Field(description="What is asked.")
    expires_at: datetime = Field(description="When `default_action` is taken without an answer.")
    default_action: InputDefault


class AmpStatus(BaseModel):
    """`GET /amp/{crew}/status/{kickoff_id}`: a superset of what AMP documents (`status`
    running|completed|error with `current_task`, `progress`, `execution_time`, `error`) and
    what AMP's clients read from the live service (`state` PENDING|RUNNING|SUCCESS|FAILED,
    `result` as the final output string, `last_executed_task.output`, `last_step`). AMP's
    documented `result` object ({output, tasks}) collides with the string its clients read;
    its parts are here as top-level `output` and `tasks`."""

    kickoff_id: str
    state: AmpState
    status: AmpStatusValue
    result: str | None = Field(description="The crew's final output, once SUCCESS.")
    result_json: dict[str, Any] | None = Field(description="Its structured output, if any.")
    output: str | None = Field(description="The same final output (AMP's `result.output`).")
    tasks: list[AmpTaskResult] = Field(description="Each finished task's output, in order.")
    last_executed_task: AmpTaskResult | None
    last_step: dict[str, Any] | None = Field(
        default=None, description="Always null: read steps from the step webhook."
    )
    current_task: str | None
    progress: AmpProgress | None
    execution_time: float | None = Field(description="Seconds since the execution started.")
    error: str | None = Field(description="Why it failed, once FAILED.")
    error_code: str | None = Field(description="crewq's code for the failure.")
    token_usage: dict[str, Any] | None
    pending_human_input: AmpHumanInput | None = Field(
        description="Set while `status` is pending_human_input."
    )


# --- the webhook payloads (AMP's "Webhook Output Examples") ---


class AmpTaskWebhook(BaseModel):
    """To `taskWebhookUrl`: a task finished (AMP's fields mirror CrewAI's TaskOutput), or a
    task waits for a person (`status` pending_human_input, with `prompt`)."""

    description: str | None
    name: str | None
    expected_output: str | None
    summary: str | None
    agent: str | None
    output: str
    output_json: dict[str, Any] | None
    kickoff_id: str
    meta: Any
    # The older AMP document's keys, where they do not collide.
    task_id: str | None
    status: str
    execution_id: str = Field(description="The same as `kickoff_id` (`POST /resume` takes it).")
    prompt: str | None = None


class AmpStepWebhook(BaseModel):
    """To `stepWebhookUrl`: one tool call (`tool`, `tool_input`, `result`) or one model call
    (`step_type` llm; crewq keeps no model text, so `thought` and `result` are null)."""

    prompt: str | None
    thought: str | None
    tool: str | None
    tool_input: str | None
    result: str | None
    kickoff_id: str
    meta: Any
    task_id: str | None
    agent: str | None
    step_type: str


class AmpCrewWebhook(BaseModel):
    """To `crewWebhookUrl`: the execution ended (AMP's fields mirror CrewAI's CrewOutput).
    AMP documents only success; a failure or cancel comes with `status` error and `error`."""

    kickoff_id: str
    result: str | None
    result_json: dict[str, Any] | None
    token_usage: dict[str, Any] | None
    meta: Any
    status: AmpStatusValue
    state: AmpState
    error: str | None
