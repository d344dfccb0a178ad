from typing import Any

from crewai import Agent, Crew, Task
from crewai.llms.base_llm import BaseLLM


def refuse(inputs: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"the crew refused: {inputs.get('reason')}")


def build(llm: BaseLLM) -> Crew:
    agent = Agent(role="Refuser", goal="Refuse", backstory="You refuse.", llm=llm)
    task = Task(description="Refuse {reason}", expected_output="Nothing", agent=agent)
    return Crew(agents=[agent], tasks=[task], before_kickoff_callbacks=[refuse])
