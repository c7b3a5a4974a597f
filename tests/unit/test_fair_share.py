"""The claim's capacity split: strict priority, even shares per tenant, spare rows rotate."""

from __future__ import annotations

from collections import Counter

import pytest

from service.domain.fair_share import FairClaim, Rotation, interleave, split


def run(
    capacity: int, backlog: dict[tuple[int, str], int], rotation: Rotation | None = None
) -> tuple[dict[tuple[int, str], int], int]:
    """Play a claim against ``backlog`` (due rows per pair); what each pair got, and rounds."""
    plan = FairClaim(capacity, [p for p, n in backlog.items() if n > 0], rotation)
    left = dict(backlog)
    got: Counter[tuple[int, str]] = Counter()
    rounds = 0
    while (step := plan.next_round()) is not None:
        rounds += 1
        priority, quotas = step
        taken = {t: min(q, left[(priority, t)]) for t, q in quotas.items()}
        for t, n in taken.items():
            left[(priority, t)] -= n
            got[(priority, t)] += n
        plan.record(taken)
    assert sum(got.values()) == min(capacity, sum(backlog.values()))
    return dict(got), rounds


def test_split_is_even_and_spare_rows_follow_the_cursor() -> None:
    assert split(9, ["b", "a", "c"], None) == ({"a": 3, "b": 3, "c": 3}, None)
    assert split(10, ["a", "b", "c"], None) == ({"a": 4, "b": 3, "c": 3}, "a")
    assert split(10, ["a", "b", "c"], "a") == ({"a": 3, "b": 4, "c": 3}, "b")
    assert split(11, ["a", "b", "c"], "b") == ({"a": 4, "b": 3, "c": 4}, "a")  # wraps
    # The cursor is a tenant id, so it still works when that tenant is gone.
    assert split(1, ["a", "c"], "b") == ({"c": 1}, "c")
    assert split(0, ["a"], "x") == ({}, "x")
    assert split(5, [], None) == ({}, None)


def test_small_capacity_goes_round_every_tenant_in_turn() -> None:
    rotation = Rotation()
    tenants = [f"t{i}" for i in range(5)]
    served: Counter[str] = Counter()
    for _ in range(10):  # ten claims of 2 rows, five tenants with deep backlogs
        got, _ = run(2, {(1, t): 1000 for t in tenants}, rotation)
        served.update(t for (_, t), n in got.items() for _ in range(n))
    assert served == dict.fromkeys(tenants, 4)


def test_one_tenant_takes_everything_in_one_round() -> None:
    assert run(256, {(1, "a"): 5000}) == ({(1, "a"): 256}, 1)
    assert run(256, {(1, "a"): 3}) == ({(1, "a"): 3}, 1)


def test_a_flood_gets_half_when_another_tenant_has_as_much() -> None:
    got, rounds = run(256, {(1, "a"): 3000, (1, "b"): 3000})
    assert got == {(1, "a"): 128, (1, "b"): 128} and rounds == 1


def test_what_a_small_tenant_leaves_goes_to_the_others_of_its_priority() -> None:
    got, rounds = run(256, {(1, "a"): 3000, (1, "b"): 20, (1, "c"): 1000})
    assert got[(1, "b")] == 20
    assert got[(1, "a")] + got[(1, "c")] == 236 and abs(got[(1, "a")] - got[(1, "c")]) <= 1
    assert rounds == 2


def test_strict_priority_across_tenants() -> None:
    got, _ = run(100, {(2, "a"): 5000, (0, "b"): 1, (1, "c"): 30, (1, "a"): 10})
    # Every high and every normal row first; low gets only what is left.
    assert got == {(0, "b"): 1, (1, "c"): 30, (1, "a"): 10, (2, "a"): 59}


def test_capacity_left_only_when_nothing_more_is_due() -> None:
    got, _ = run(256, {(0, "a"): 3, (1, "b"): 4, (2, "c"): 5})
    assert got == {(0, "a"): 3, (1, "b"): 4, (2, "c"): 5}


def test_uneven_backlogs_converge_in_few_rounds() -> None:
    backlog = {(1, f"t{i}"): n for i, n in enumerate([1, 2, 5, 9, 40, 300, 5000])}
    got, rounds = run(256, backlog)
    # Max-min fair: small tenants get all they have, the big ones share the rest evenly.
    assert [got[(1, f"t{i}")] for i in range(5)] == [1, 2, 5, 9, 40]
    assert {got[(1, "t5")], got[(1, "t6")]} == {99, 100}
    assert rounds <= 4


def test_a_round_must_be_recorded_before_the_next() -> None:
    plan = FairClaim(10, [(1, "a")])
    assert plan.next_round() == (1, {"a": 10})
    with pytest.raises(RuntimeError):
        plan.next_round()
    plan.record({"a": 10})
    assert plan.next_round() is None


def test_interleave_takes_turns_in_first_seen_order() -> None:
    items = ["a1", "a2", "a3", "b1", "c1", "c2"]
    assert interleave(items, key=lambda s: s[0]) == ["a1", "b1", "c1", "a2", "c2", "a3"]
    assert interleave([], key=lambda s: s) == []
