"""`/v1/webhooks`: register, read, change, test and remove webhook endpoints, rotate their
secrets, page through their deliveries; `/v1/deliveries`: read one, send it again.

The API never calls a receiver itself: a test or a retry is a row for the dispatcher.
"""

import asyncio

from aiohttp import web

from api.context import BOX, DB, SETTINGS, URLS
from api.errors import ApiError, Code
from api.notifications import HUB
from api.operations import CURSOR, LIMIT, Call, Link, Operation, enum_query, operation
from api.responses import json_response
from schemas.account import Scope
from schemas.webhooks import (
    Delivery,
    DeliveryList,
    DeliveryStatus,
    SecretRotate,
    WebhookCreate,
    WebhookEndpoint,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookSecret,
    WebhookTestResult,
    WebhookUpdate,
)
from shared.store import deliveries, endpoints, events
from shared.store.deliveries import ATTEMPTS_CHANNEL, RetryOutcome
from shared.webhooks.urls import UrlRefused

routes = web.RouteTableDef()
SCOPE = Scope.WEBHOOKS_MANAGE
# How much longer than one attempt's timeout /test waits for the dispatcher to make it.
_TEST_SLACK_S = 5.0
DELIVERY_STATUS = enum_query("status", DeliveryStatus, "Only these.")


def _not_found(endpoint_id: str) -> ApiError:
    return ApiError(Code.WEBHOOK_NOT_FOUND, f"no webhook endpoint {endpoint_id!r} for this tenant")


def _delivery_not_found(delivery_id: str) -> ApiError:
    return ApiError(Code.DELIVERY_NOT_FOUND, f"no delivery {delivery_id!r} for this tenant")


async def _check_url(request: web.Request, url: str) -> None:
    try:
        await request.app[URLS].check(url)
    except UrlRefused as exc:
        raise ApiError(
            Code.INVALID_WEBHOOK_URL, f"url refused: {exc}", {"reason": str(exc)}
        ) from exc


@routes.post("/v1/webhooks")
@operation(
    Operation(
        "Register a webhook endpoint (its secret is shown once)",
        SCOPE,
        {201: WebhookEndpointCreated},
        body=WebhookCreate,
        errors=[Code.INVALID_WEBHOOK_URL, Code.TOO_MANY_WEBHOOK_ENDPOINTS],
        links=[
            Link(op)
            for op in (
                "get_webhook",
                "update_webhook",
                "delete_webhook",
                "rotate_secret",
                "test_webhook",
                "list_deliveries",
            )
        ],
        tags=["webhooks"],
    )
)
async def create_webhook(request: web.Request, call: Call[WebhookCreate]) -> web.Response:
    principal, body = call.principal, call.body
    await _check_url(request, body.url)
    created = await endpoints.create(
        request.app[DB],
        principal.owner,
        url=body.url,
        events=body.events,
        description=body.description,
        default_limit=request.app[SETTINGS].tenant_max_webhook_endpoints,
        box=request.app[BOX],
    )
    if isinstance(created, endpoints.TooMany):
        raise ApiError(
            Code.TOO_MANY_WEBHOOK_ENDPOINTS,
            f"this tenant already has {created.limit} webhook endpoints, as many as it may;"
            " delete one first",
            {"limit": created.limit},
        )
    return json_response(
        WebhookEndpointCreated(**created.endpoint.model_dump(), secret=created.secret),
        status=201,
        headers={"Location": f"/v1/webhooks/{created.endpoint.id}"},
    )


@routes.get("/v1/webhooks")
@operation(
    Operation(
        "List webhook endpoints",
        SCOPE,
        {200: WebhookEndpointList},
        query=[LIMIT, CURSOR],
        tags=["webhooks"],
    )
)
async def list_webhooks(request: web.Request, call: Call[None]) -> web.Response:
    page, has_more = await endpoints.page(
        request.app[DB], call.principal.owner, before=call[CURSOR], limit=call[LIMIT]
    )
    return json_response(WebhookEndpointList.of(page, has_more))


@routes.get("/v1/webhooks/{endpoint_id}")
@operation(
    Operation(
        "Read a webhook endpoint",
        SCOPE,
        {200: WebhookEndpoint},
        errors=[Code.WEBHOOK_NOT_FOUND],
        tags=["webhooks"],
    )
)
async def get_webhook(request: web.Request, call: Call[None]) -> web.Response:
    endpoint_id = request.match_info["endpoint_id"]
    endpoint = await endpoints.get(request.app[DB], call.principal.owner, endpoint_id)
    if endpoint is None:
        raise _not_found(endpoint_id)
    return json_response(endpoint)


@routes.patch("/v1/webhooks/{endpoint_id}")
@operation(
    Operation(
        "Change a webhook endpoint",
        SCOPE,
        {200: WebhookEndpoint},
        body=WebhookUpdate,
        errors=[Code.WEBHOOK_NOT_FOUND, Code.INVALID_WEBHOOK_URL],
        tags=["webhooks"],
    )
)
async def update_webhook(request: web.Request, call: Call[WebhookUpdate]) -> web.Response:
    principal, body = call.principal, call.body
    endpoint_id = request.match_info["endpoint_id"]
    if body.url is not None:
        await _check_url(request, body.url)
    endpoint = await endpoints.update(
        request.app[DB],
        principal.owner,
        endpoint_id,
        url=body.url,
        events=body.events,
        description=body.description,
        enabled=body.enabled,
    )
    if endpoint is None:
        raise _not_found(endpoint_id)
    return json_response(endpoint)


@routes.delete("/v1/webhooks/{endpoint_id}")
@operation(
    Operation(
        "Remove a webhook endpoint",
        SCOPE,
        {204: None},
        errors=[Code.WEBHOOK_NOT_FOUND],
        tags=["webhooks"],
    )
)
async def delete_webhook(request: web.Request, call: Call[None]) -> web.Response:
    endpoint_id = request.match_info["endpoint_id"]
    if not await endpoints.delete(request.app[DB], call.principal.owner, endpoint_id):
        raise _not_found(endpoint_id)
    return web.Response(status=204)


@routes.post("/v1/webhooks/{endpoint_id}/rotate-secret")
@operation(
    Operation(
        "Rotate an endpoint's signing secret",
        SCOPE,
        {200: WebhookSecret},
        body=SecretRotate,
        body_optional=True,
        errors=[Code.WEBHOOK_NOT_FOUND],
        tags=["webhooks"],
    )
)
async def rotate_secret(request: web.Request, call: Call[SecretRotate]) -> web.Response:
    endpoint_id = request.match_info["endpoint_id"]
    # The body is optional (body_optional): none means the default grace.
    rotated = await endpoints.rotate_secret(
        request.app[DB],
        call.principal.owner,
        endpoint_id,
        call.body.grace_seconds,
        request.app[BOX],
    )
    if rotated is None:
        raise _not_found(endpoint_id)
    return json_response(rotated)


@routes.post("/v1/webhooks/{endpoint_id}/test")
@operation(
    Operation(
        "Send a test event and report the receiver's answer",
        SCOPE,
        {200: WebhookTestResult},
        errors=[Code.WEBHOOK_NOT_FOUND, Code.WEBHOOK_TEST_PENDING],
        tags=["webhooks"],
    )
)
async def test_webhook(request: web.Request, call: Call[None]) -> web.Response:
    """Owe a `webhook.test` event to this endpoint, then wait for the dispatcher's first
    attempt and report what the receiver answered."""
    endpoint_id = request.match_info["endpoint_id"]
    db = request.app[DB]
    async with db.acquire() as conn:
        sent = await events.send_test(conn, call.principal.owner, endpoint_id)
    if sent is None:
        raise _not_found(endpoint_id)
    event_id, delivery_id = sent
    wait_s = request.app[SETTINGS].webhook_timeout + _TEST_SLACK_S
    with request.app[HUB].watch(ATTEMPTS_CHANNEL, delivery_id) as attempted:
        try:
            async with asyncio.timeout(wait_s):
                # Looked up once after watching begins: an attempt made before then is
                # already stored, and one made after is announced.
                while (attempt := await deliveries.first_attempt(db, delivery_id)) is None:
                    await attempted.wait()
                    attempted.clear()
        except TimeoutError:
            raise ApiError(
                Code.WEBHOOK_TEST_PENDING,
                "the test event is queued but no attempt was made in time (is a dispatcher"
                " running?); its delivery shows the outcome later",
                {"event_id": event_id, "delivery_id": delivery_id},
            ) from None
    return json_response(
        WebhookTestResult(
            endpoint_id=endpoint_id,
            event_id=event_id,
            delivery_id=delivery_id,
            succeeded=attempt.status_code is not None and 200 <= attempt.status_code < 300,
            status_code=attempt.status_code,
            duration_ms=attempt.duration_ms,
            error=attempt.error,
            response_body=attempt.response_body,
            attempted_at=attempt.attempted_at,
        )
    )


@routes.get("/v1/webhooks/{endpoint_id}/deliveries")
@operation(
    Operation(
        "An endpoint's deliveries, newest first",
        SCOPE,
        {200: DeliveryList},
        query=[DELIVERY_STATUS, LIMIT, CURSOR],
        errors=[Code.WEBHOOK_NOT_FOUND],
        links=[Link("get_delivery", "/data/0/id"), Link("retry_delivery", "/data/0/id")],
        tags=["webhooks"],
    )
)
async def list_deliveries(request: web.Request, call: Call[None]) -> web.Response:
    principal = call.principal
    endpoint_id = request.match_info["endpoint_id"]
    db = request.app[DB]
    if not await endpoints.exists(db, principal.owner, endpoint_id):
        raise _not_found(endpoint_id)
    page, has_more = await deliveries.endpoint_page(
        db,
        principal.owner,
        endpoint_id,
        status=call[DELIVERY_STATUS],
        before=call[CURSOR],
        limit=call[LIMIT],
    )
    return json_response(DeliveryList.of(page, has_more))


@routes.get("/v1/deliveries/{delivery_id}")
@operation(
    Operation(
        "Read a delivery and its attempts",
        SCOPE,
        {200: Delivery},
        errors=[Code.DELIVERY_NOT_FOUND],
        tags=["webhooks"],
    )
)
async def get_delivery(request: web.Request, call: Call[None]) -> web.Response:
    delivery_id = request.match_info["delivery_id"]
    delivery = await deliveries.get(request.app[DB], call.principal.owner, delivery_id)
    if delivery is None:
        raise _delivery_not_found(delivery_id)
    return json_response(delivery)


@routes.post("/v1/deliveries/{delivery_id}/retry")
@operation(
    Operation(
        "Send a delivery again",
        SCOPE,
        {202: Delivery},
        errors=[Code.DELIVERY_NOT_FOUND, Code.WEBHOOK_DISABLED, Code.DELIVERY_IN_FLIGHT],
        tags=["webhooks"],
    )
)
async def retry_delivery(request: web.Request, call: Call[None]) -> web.Response:
    principal = call.principal
    delivery_id = request.match_info["delivery_id"]
    db = request.app[DB]
    outcome = await deliveries.retry(db, principal.owner, delivery_id)
    if outcome is RetryOutcome.NOT_FOUND:
        raise _delivery_not_found(delivery_id)
    if outcome is RetryOutcome.ENDPOINT_DISABLED:
        raise ApiError(
            Code.WEBHOOK_DISABLED,
            "the endpoint is disabled; enable it first (PATCH enabled=true)",
        )
    if outcome is RetryOutcome.IN_FLIGHT:
        raise ApiError(
            Code.DELIVERY_IN_FLIGHT, "an attempt of this delivery is under way; try again shortly"
        )
    delivery = await deliveries.get(db, principal.owner, delivery_id)
    assert delivery is not None
    return json_response(delivery, status=202)
