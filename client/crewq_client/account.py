"""`client.account`: the calling key's tenant, the key itself, and this month's usage."""

from typing import TYPE_CHECKING

from crewq_client._request import get
from schemas.account import Account, CurrentKey, Usage

if TYPE_CHECKING:
    from crewq_client._client import AsyncClient, Client

__all__ = ["AccountApi", "AsyncAccountApi"]


class AccountApi:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def get(self) -> Account:
        return self._client.send(get("/v1/account", Account))

    def current_key(self) -> CurrentKey:
        return self._client.send(get("/v1/account/api-keys/current", CurrentKey))

    def usage(self) -> Usage:
        """This month's jobs and model spending against their caps, and this second's
        requests against the rate limit."""
        return self._client.send(get("/v1/account/usage", Usage))


class AsyncAccountApi:
    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def get(self) -> Account:
        return await self._client.send(get("/v1/account", Account))

    async def current_key(self) -> CurrentKey:
        return await self._client.send(get("/v1/account/api-keys/current", CurrentKey))

    async def usage(self) -> Usage:
        return await self._client.send(get("/v1/account/usage", Usage))
