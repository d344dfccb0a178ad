"""What Postgres text and jsonb can hold."""

from shared.runtime.db import storable


def test_nul_goes_and_lone_surrogates_are_replaced_at_any_depth() -> None:
    value = {"a\x00": ["x\x00y", {"z": "lone \udc80 and pair \ud83d\ude00"}], "n": 3, "f": None}
    assert storable(value) == {
        "a": ["xy", {"z": "lone \ufffd and pair \U0001f600"}],
        "n": 3,
        "f": None,
    }


def test_clean_text_is_returned_as_it_is() -> None:
    text = "plain ascii, and ümlauts ✓"
    assert storable(text) == text and storable(["a", 1, 2.5, True]) == ["a", 1, 2.5, True]
