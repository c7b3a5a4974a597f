"""Parts of a claim whose bodies fit the worker's budget (pure)."""

from __future__ import annotations

from service.domain.body_budget import parts_within


def test_bodies_that_fit_are_one_part() -> None:
    assert parts_within(["a", "b", "c"], {"a": 10, "b": 10, "c": 10}, 30) == [["a", "b", "c"]]


def test_parts_are_consecutive_and_never_exceed_the_budget() -> None:
    sizes = {"a": 6, "b": 5, "c": 4, "d": 7, "e": 1}
    parts = parts_within(list(sizes), sizes, 10)
    assert parts == [["a"], ["b", "c"], ["d", "e"]]
    assert [m for part in parts for m in part] == list(sizes)
    assert all(sum(sizes[m] for m in part) <= 10 for part in parts)


def test_a_body_larger_than_the_budget_is_a_part_by_itself() -> None:
    assert parts_within(["a", "big", "b"], {"a": 1, "big": 50, "b": 1}, 10) == [
        ["a"],
        ["big"],
        ["b"],
    ]


def test_a_missing_body_counts_as_empty() -> None:
    assert parts_within(["a", "gone"], {"a": 10}, 10) == [["a", "gone"]]


def test_no_ids_no_parts() -> None:
    assert parts_within([], {}, 10) == []
