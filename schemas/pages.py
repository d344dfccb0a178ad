"""One shape for every paged list: newest first, `next_cursor` is the last item's id."""

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

ItemT = TypeVar("ItemT", bound=BaseModel)


class Page(BaseModel, Generic[ItemT]):
    object: Literal["list"] = "list"
    data: list[ItemT]
    has_more: bool
    next_cursor: str | None

    @classmethod
    def of(cls, items: list[ItemT], has_more: bool) -> "Page[ItemT]":
        last = items[-1] if has_more and items else None
        return cls(data=items, has_more=has_more, next_cursor=getattr(last, "id", None))
