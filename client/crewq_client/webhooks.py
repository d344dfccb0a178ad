"""`client.webhooks`: webhook endpoints (register, read, change, test, rotate their secret,
remove) and their deliveries."""

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING

from crewq_client import _paging
from crewq_client._request import ApiRequest, body, get, model, nothing, post, query
from schemas.webhooks import (
    Delivery,
    DeliveryList,
    DeliveryStatus,
    WebhookEndpoint,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookSecret,
    WebhookTestResult,
)

if TYPE_CHECKING:
    from crewq_client._client import AsyncClient, Client

__all__ = ["AsyncWebhooks", "Webhooks"]

PAGE_SIZE = 100


# --- the requests, built once for both clients ---


def _create(
    url: str, events: Sequence[str] | None, description: str
) -> ApiRequest[WebhookEndpointCreated]:
    fields = body(url=url, events=list(events) if events else None, description=description)
    return post("/v1/webhooks", WebhookEndpointCreated, fields)


def _page(limit: int | None) -> ApiRequest[WebhookEndpointList]:
    size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit)
    return get("/v1/webhooks", WebhookEndpointList, query(limit=size))


def _update(
    endpoint_id: str,
    url: str | None,
    events: Sequence[str] | None,
    description: str | None,
    enabled: bool | None,
) -> ApiRequest[WebhookEndpoint]:
    fields = body(
        url=url,
        events=list(events) if events is not None else None,
        description=description,
        enabled=enabled,
    )
    return ApiRequest("PATCH", f"/v1/webhooks/{endpoint_id}", model(WebhookEndpoint), json=fields)


def _delete(endpoint_id: str) -> ApiRequest[None]:
    # Deleting twice leaves what deleting once does (the second answers 404).
    return ApiRequest("DELETE", f"/v1/webhooks/{endpoint_id}", nothing)


def _rotate(endpoint_id: str, grace_seconds: int | None) -> ApiRequest[WebhookSecret]:
    fields = body(grace_seconds=grace_seconds)
    return post(f"/v1/webhooks/{endpoint_id}/rotate-secret", WebhookSecret, fields or None)


def _deliveries(
    endpoint_id: str, status: DeliveryStatus | None, limit: int | None
) -> ApiRequest[DeliveryList]:
    size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit)
    params = query(status=status, limit=size)
    return get(f"/v1/webhooks/{endpoint_id}/deliveries", DeliveryList, params)


class Webhooks:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def create(
        self, url: str, *, events: Sequence[str] | None = None, description: str = ""
    ) -> WebhookEndpointCreated:
        """Register an endpoint; the answer holds its signing secret, shown this once.
        `events`: the types to receive (default `*`: all but the crew steps)."""
        return self._client.send(_create(url, events, description))

    def list(self, *, limit: int | None = None) -> Iterator[WebhookEndpoint]:
        return _paging.items(self._client.send, _page(limit), limit)

    def get(self, endpoint_id: str) -> WebhookEndpoint:
        return self._client.send(get(f"/v1/webhooks/{endpoint_id}", WebhookEndpoint))

    def update(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> WebhookEndpoint:
        """Change the fields given; `enabled=True` re-enables a disabled endpoint."""
        return self._client.send(_update(endpoint_id, url, events, description, enabled))

    def enable(self, endpoint_id: str) -> WebhookEndpoint:
        return self.update(endpoint_id, enabled=True)

    def disable(self, endpoint_id: str) -> WebhookEndpoint:
        return self.update(endpoint_id, enabled=False)

    def delete(self, endpoint_id: str) -> None:
        self._client.send(_delete(endpoint_id))

    def rotate_secret(self, endpoint_id: str, *, grace_seconds: int | None = None) -> WebhookSecret:
        """A new secret (shown once); the old one keeps signing for `grace_seconds`."""
        return self._client.send(_rotate(endpoint_id, grace_seconds))

    def test(self, endpoint_id: str) -> WebhookTestResult:
        """Send a `webhook.test` event and report what the receiver answered."""
        return self._client.send(post(f"/v1/webhooks/{endpoint_id}/test", WebhookTestResult))

    def deliveries(
        self,
        endpoint_id: str,
        *,
        status: DeliveryStatus | None = None,
        limit: int | None = None,
    ) -> Iterator[Delivery]:
        return _paging.items(self._client.send, _deliveries(endpoint_id, status, limit), limit)

    def get_delivery(self, delivery_id: str) -> Delivery:
        return self._client.send(get(f"/v1/deliveries/{delivery_id}", Delivery))

    def retry_delivery(self, delivery_id: str) -> Delivery:
        return self._client.send(post(f"/v1/deliveries/{delivery_id}/retry", Delivery))


class AsyncWebhooks:
    """`Webhooks`, awaited."""

    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def create(
        self, url: str, *, events: Sequence[str] | None = None, description: str = ""
    ) -> WebhookEndpointCreated:
        return await self._client.send(_create(url, events, description))

    def list(self, *, limit: int | None = None) -> AsyncIterator[WebhookEndpoint]:
        return _paging.items_async(self._client.send, _page(limit), limit)

    async def get(self, endpoint_id: str) -> WebhookEndpoint:
        return await self._client.send(get(f"/v1/webhooks/{endpoint_id}", WebhookEndpoint))

    async def update(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> WebhookEndpoint:
        return await self._client.send(_update(endpoint_id, url, events, description, enabled))

    async def enable(self, endpoint_id: str) -> WebhookEndpoint:
        return await self.update(endpoint_id, enabled=True)

    async def disable(self, endpoint_id: str) -> WebhookEndpoint:
        return await self.update(endpoint_id, enabled=False)

    async def delete(self, endpoint_id: str) -> None:
        await self._client.send(_delete(endpoint_id))

    async def rotate_secret(
        self, endpoint_id: str, *, grace_seconds: int | None = None
    ) -> WebhookSecret:
        return await self._client.send(_rotate(endpoint_id, grace_seconds))

    async def test(self, endpoint_id: str) -> WebhookTestResult:
        return await self._client.send(post(f"/v1/webhooks/{endpoint_id}/test", WebhookTestResult))

    def deliveries(
        self,
        endpoint_id: str,
        *,
        status: DeliveryStatus | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Delivery]:
        return _paging.items_async(
            self._client.send, _deliveries(endpoint_id, status, limit), limit
        )

    async def get_delivery(self, delivery_id: str) -> Delivery:
        return await self._client.send(get(f"/v1/deliveries/{delivery_id}", Delivery))

    async def retry_delivery(self, delivery_id: str) -> Delivery:
        return await self._client.send(post(f"/v1/deliveries/{delivery_id}/retry", Delivery))
