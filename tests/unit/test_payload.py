"""The payload is serialised once, by kongtaskd, the same for every driver."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import uuid
from typing import Any

import pytest

from kongtaskd.enqueue import InvalidJobArgument, InvalidJobArgumentType, encode_payload


class Colour(enum.Enum):
    RED = 1


class Size(enum.IntEnum):
    BIG = 2


def test_the_documented_extras_become_strings() -> None:
    value = {
        "at": dt.datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc),
        "naive": dt.datetime(2030, 1, 2, 3, 4),
        "day": dt.date(2030, 1, 2),
        "price": decimal.Decimal("0.10"),
        "id": uuid.UUID(int=1),
        "tuple": (1, 2),
        "int_enum": Size.BIG,
        1: "int keys become strings, as in JSON",
    }
    assert json.loads(encode_payload(value)) == {
        "at": "2030-01-02T03:04:05.000006+00:00",
        "naive": "2030-01-02T03:04:00",
        "day": "2030-01-02",
        "price": "0.10",
        "id": "00000000-0000-0000-0000-000000000001",
        "tuple": [1, 2],
        "int_enum": 2,
        "1": "int keys become strings, as in JSON",
    }


def test_plain_json_is_unchanged() -> None:
    value: Any = {"a": [1, 2.5, None, True, "☃"], "b": {}}
    assert encode_payload(value) == json.dumps(value)


cyclic: list[Any] = []
cyclic.append({"again": cyclic})
deep: list[Any] = []
for _ in range(100_000):
    deep = [deep]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ({1, 2}, InvalidJobArgumentType, "payload is not JSON-serialisable: Object of type set"),
        (
            {"a": [0, {"b": b"x"}]},
            InvalidJobArgumentType,
            "payload['a'][1]['b'] is not JSON-serialisable: Object of type bytes",
        ),
        ({"c": Colour.RED}, InvalidJobArgumentType, "payload['c'] is not JSON-serialisable: "),
        ({"o": object()}, InvalidJobArgumentType, "payload['o'] is not JSON-serialisable: Object"),
        ({(1, 2): "x"}, InvalidJobArgumentType, "payload is not JSON-serialisable: key (1, 2) is"),
        (
            {"n": [float("inf")]},
            InvalidJobArgument,
            "payload['n'][0] is not JSON-serialisable: inf",
        ),
        (
            {"d": decimal.Decimal("NaN")},
            InvalidJobArgument,
            "payload['d'] is not JSON-serialisable: Decimal NaN is not a JSON number",
        ),
        (cyclic, InvalidJobArgument, "payload[0]['again'] is not JSON-serialisable: it contains"),
        (deep, InvalidJobArgument, "payload is not JSON-serialisable: it is nested too deeply"),
    ],
)
def test_what_json_cannot_hold_is_refused_naming_its_path(
    value: Any, error: type, message: str
) -> None:
    with pytest.raises(error) as caught:
        encode_payload(value)
    assert str(caught.value).startswith(message), str(caught.value)
    assert isinstance(caught.value, ValueError | TypeError)
