"""What `/healthz` answers."""

from typing import Literal

from pydantic import BaseModel


class Health(BaseModel):
    status: Literal["ok"]
    checks: dict[str, str]
