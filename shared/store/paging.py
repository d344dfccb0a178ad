"""Cursor pages, one mechanism for every list.

A list is read newest first (or, for a job's events, in the order they happened) from a
cursor, the last id of the previous page. A page of `limit` fetches `one_more(limit)` rows:
the extra row, never shown, says whether more follow without counting them. `cut` makes the
page and that answer from what was fetched.

Pages of jobs and events also stop at a byte budget (shared/runtime/limits.py), in the query: it
returns fewer rows than it looked at, and says how many it looked at (`seen`), so that more
follow when it looked at more than the page holds.
"""

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def one_more(limit: int) -> int:
    """How many rows a page of `limit` fetches."""
    return limit + 1


def cut(rows: Sequence[T], limit: int, *, seen: int | None = None) -> tuple[list[T], bool]:
    """The page of at most `limit` from `rows` (fetched with `one_more(limit)`), and whether
    more follow: rows past the page were fetched, or the query looked at `seen` rows, more
    than the page holds (a byte budget stopped it early)."""
    page = list(rows[:limit])
    return page, (len(rows) if seen is None else seen) > len(page)
