"""shared/runtime/ids.py: prefixed ids that sort in the order they were made."""

from shared.runtime.ids import new_id


def test_ids_made_in_the_same_millisecond_sort_in_the_order_made() -> None:
    made = [new_id("job") for _ in range(5_000)]  # many per millisecond
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_an_id_is_its_prefix_and_26_crockford_characters() -> None:
    prefix, _, body = new_id("evt").partition("_")
    assert prefix == "evt" and len(body) == 26
    assert set(body) <= set("0123456789abcdefghjkmnpqrstvwxyz")
