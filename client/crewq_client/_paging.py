"""Automatic paging: every list answers `Page` (`data`, `has_more`, `next_cursor`), and the
next page is the same request with the cursor parameter set to `next_cursor`."""

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

from pydantic import BaseModel

from crewq_client._request import ApiRequest
from schemas.pages import Page

M = TypeVar("M", bound=BaseModel)


def items(
    send: Callable[[ApiRequest[Page[M]]], Page[M]],
    first: ApiRequest[Page[M]],
    limit: int | None,
    cursor: str = "cursor",
) -> Iterator[M]:
    """Every item of every page, fetched as the caller gets that far; `limit` items at most."""
    request: ApiRequest[Page[M]] | None = first
    given = 0
    while request is not None:
        page = send(request)
        for item in page.data:
            if limit is not None and given >= limit:
                return
            given += 1
            yield item
        request = _next(request, page, cursor)


async def items_async(
    send: Callable[[ApiRequest[Page[M]]], Awaitable[Page[M]]],
    first: ApiRequest[Page[M]],
    limit: int | None,
    cursor: str = "cursor",
) -> AsyncIterator[M]:
    request: ApiRequest[Page[M]] | None = first
    given = 0
    while request is not None:
        page = await send(request)
        for item in page.data:
            if limit is not None and given >= limit:
                return
            given += 1
            yield item
        request = _next(request, page, cursor)


def _next(request: ApiRequest[Page[M]], page: Page[M], cursor: str) -> ApiRequest[Page[M]] | None:
    if not page.has_more or page.next_cursor is None:
        return None
    return request.with_params(**{cursor: page.next_cursor})
