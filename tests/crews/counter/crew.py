from crewai import Agent, Crew, Task
from crewai.llms.base_llm import BaseLLM
from crewai.tools import tool


@tool("count_words")
def count_words(text: str) -> str:
    """Count the words of a text."""
    if "[[tool-error]]" in text:
        raise ValueError("the counter broke")
    return f"{len(text.split())} words"


def build(llm: BaseLLM) -> Crew:
    agent = Agent(
        role="Counter",
        goal="Count words with the count_words tool",
        backstory="You always use your tool.",
        tools=[count_words],
        llm=llm,
    )
    task = Task(
        description="Count the words of: {text} [[tool:count_words]]",
        expected_output="How many words there are.",
        agent=agent,
    )
    return Crew(agents=[agent], tasks=[task])
