"""Cursor pages (shared/store/paging.py): a page and whether more follow, from rows fetched with
one more than the page holds, or from what a byte-budgeted query says it looked at."""

from shared.store.paging import cut, one_more


def test_the_row_past_the_page_says_more_follow_and_is_not_shown() -> None:
    limit = 3
    fetched = list(range(one_more(limit)))
    assert cut(fetched, limit) == ([0, 1, 2], True)


def test_a_short_or_exact_fetch_is_the_last_page() -> None:
    assert cut([0, 1, 2], 3) == ([0, 1, 2], False)
    assert cut([0, 1], 3) == ([0, 1], False)
    assert cut([], 3) == ([], False)


def test_a_page_stopped_by_its_byte_budget_has_more_when_it_looked_at_more() -> None:
    # The query looked at 4 rows (limit + 1) but its budget let through 2.
    assert cut([0, 1], 3, seen=4) == ([0, 1], True)
    # It looked at 3 of 3 and let all through: nothing more.
    assert cut([0, 1, 2], 3, seen=3) == ([0, 1, 2], False)
    # It looked at 2, the budget let through 1: the second is on the next page.
    assert cut([0], 3, seen=2) == ([0], True)
    assert cut([], 3, seen=0) == ([], False)
