"""A flow for tests: a model call, then a count, with its state persisted."""

from crewai.flow.flow import Flow, listen, start
from crewai.flow.persistence import persist
from pydantic import BaseModel


class TallyState(BaseModel):
    id: str = ""
    word: str = ""
    said: str = ""


@persist()
class TallyFlow(Flow[TallyState]):
    _skip_auto_memory = True

    @start()
    def say(self) -> str:
        prompt = f"Current Task: Say the word {self.state.word}"
        llm = getattr(self, "llm")  # noqa: B009 (set by crewq on the instance)
        said = str(llm.call([{"role": "user", "content": prompt}]))
        self.state.said = said
        return said

    @listen(say)
    def count(self, said: str) -> dict[str, int]:
        return {"letters": len(said), "words": len(said.split())}
