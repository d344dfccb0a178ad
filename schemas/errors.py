"""The one JSON shape every error response has."""

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail
