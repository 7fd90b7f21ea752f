"""``settle.parse``: the statement's union of row kinds becomes named fields."""

from __future__ import annotations

import datetime as dt

import pytest

from kongtaskd.settle import ClaimedJob, FailedJob, Outcomes, SettleResult, parse

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def test_every_row_kind_lands_in_its_field() -> None:
    result = parse(
        [
            ("completed", 1, None, None, None, None, None, None),
            ("failed", 2, None, None, T0, 25, 25, None),
            ("released", 3, None, None, None, None, None, None),
            ("claimed", 4, 7, -1, T0, 1, 25, None),
            ("more", None, None, None, None, None, None, None),
        ]
    )
    assert result == SettleResult(
        completed=[1],
        failed=[FailedJob(2, 25, 25, T0)],
        released=[3],
        claimed=[ClaimedJob(4, 7, -1, T0)],
        more=True,
    )
    assert result.failed[0].permanent
    assert result.written() == {1, 2, 3}
    assert not parse([]).more


def test_an_unknown_row_kind_is_an_error_that_names_it() -> None:
    with pytest.raises(ValueError, match="unknown kind 'deleted'"):
        parse([("deleted", 1, None, None, None, None, None, None)])


def test_outcomes_are_false_when_empty_and_list_their_ids() -> None:
    assert not Outcomes()
    outcomes = Outcomes(completed=[1], failed={2: "x"}, released=[3, 1])
    assert outcomes and outcomes.ids() == {1, 2, 3}
