"""What `GET /v1/account` tells a key about its tenant."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class Account(BaseModel):
    object: Literal["account"] = "account"
    tenant_id: str
    tenant_name: str
    webhook_signing_secret: str | None  # shown to keys with the webhooks:manage scope
    key_id: str
    scopes: list[str]
    created_at: datetime
