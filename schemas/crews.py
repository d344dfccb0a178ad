"""Crews as `GET /v1/crews` describes them."""

from typing import Literal

from pydantic import BaseModel, Field


class CrewInfo(BaseModel):
    object: Literal["crew"] = "crew"
    name: str
    description: str
    inputs: list[str]
    kind: Literal["yaml", "callable", "flow"] = Field(
        description="yaml: agents.yaml and tasks.yaml; callable: a function returning a Crew;"
        " flow: a CrewAI Flow (its methods are the job's tasks)."
    )
    process: str
    agents: list[str]
    tasks: list[str]
    default_timeout: int | None
    default_max_retries: int | None


class CrewList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CrewInfo]
