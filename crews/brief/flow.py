"""An example CrewAI Flow run as a crewq job.

A model outlines a brief about `topic`; a person reviews the outline (`@human_feedback`:
the job waits in `awaiting_input` until `POST /v1/jobs/{id}/input` answers it); the model
writes the brief from the outline and the review. `@persist` keeps the flow's state after
each method; under crewq it is stored in Postgres, sealed, and a retried job takes it up.

`self.llm` is the platform's model when crewq runs the flow (with its retries, and the
offline model for a test key's job); run on its own, the flow uses `LLM(model=...)`.
"""

from typing import Any

from crewai import LLM
from crewai.flow.flow import Flow, listen, start
from crewai.flow.human_feedback import HumanFeedbackResult, human_feedback
from crewai.flow.persistence import persist
from pydantic import BaseModel


class BriefState(BaseModel):
    id: str = ""  # filled by CrewAI; @persist keys the state by it
    topic: str = ""
    outline: str = ""
    brief: str = ""


@persist()
class BriefFlow(Flow[BriefState]):
    _skip_auto_memory = True  # no memory store: nothing here recalls earlier runs

    def _model(self) -> Any:
        return getattr(self, "llm", None) or LLM(model="gpt-4o-mini")

    @start()
    def outline(self) -> str:
        prompt = f"Current Task: Outline a one-paragraph brief about {self.state.topic}."
        self.state.outline = str(self._model().call([{"role": "user", "content": prompt}]))
        return self.state.outline

    @listen(outline)
    @human_feedback(message="Is this outline right to write the brief from?")
    def review(self, outline: str) -> str:
        return outline

    @listen(review)
    def write(self, review: HumanFeedbackResult) -> str:
        prompt = (
            f"Current Task: Write the brief about {self.state.topic} from this outline:"
            f" {self.state.outline}\nThe reviewer said: {review.feedback}"
        )
        self.state.brief = str(self._model().call([{"role": "user", "content": prompt}]))
        return self.state.brief
