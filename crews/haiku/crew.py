"""A crew defined in Python: `crew.yaml` points at `build`, which returns a fresh Crew."""

from crewai import Agent, Crew, Process, Task
from crewai.llms.base_llm import BaseLLM


def build(llm: BaseLLM) -> Crew:
    poet = Agent(
        role="Poet",
        goal="Write one vivid haiku about {subject}",
        backstory="You write haiku: three lines, five-seven-five syllables, no title.",
        llm=llm,
    )
    haiku = Task(
        description="Write a haiku about {subject}.",
        expected_output="Exactly three lines of verse.",
        agent=poet,
    )
    return Crew(agents=[poet], tasks=[haiku], process=Process.sequential)
