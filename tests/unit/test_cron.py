"""Crontab parsing, JSON5 payloads and tick maths (UTC and across DST changes); no database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kongtaskd.config import load_config
from kongtaskd.cron import (
    CronItem,
    Json5Error,
    fire_times,
    load_crontab,
    next_fire_time,
    parse_crontab,
    parse_json5,
)
from kongtaskd.errors import ConfigError, ExitCode

UTC = dt.timezone.utc


def one(line: str) -> CronItem:
    items = parse_crontab(line)
    assert len(items) == 1
    return items[0]


def error_of(text: str, prefix: str = "kongtask.yaml: crontab ") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_crontab(text, prefix)
    assert caught.value.exit_code == ExitCode.USAGE
    message = caught.value.message
    assert "\n" not in message, message
    return message


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# --- valid lines ---------------------------------------------------------------------------


def test_every_minute_defaults() -> None:
    item = one("* * * * * task")
    assert item.minutes == frozenset(range(60))
    assert item.hours == frozenset(range(24))
    assert item.dates == frozenset(range(1, 32))
    assert item.months == frozenset(range(1, 13))
    assert item.dows == frozenset(range(7))
    assert (item.task, item.identifier, item.line) == ("task", "task", 1)
    assert item.fill == dt.timedelta(0)
    assert item.payload is None
    assert (item.max_attempts, item.queue_name, item.priority) == (None, None, None)
    assert (item.job_key, item.job_key_mode) == (None, None)


def test_ranges_steps_lists_and_sunday_as_seven() -> None:
    item = one("*/15 8-10 1,15,31 1-3,12 1-5 task")
    assert item.minutes == {0, 15, 30, 45}
    assert item.hours == {8, 9, 10}
    assert item.dates == {1, 15, 31}
    assert item.months == {1, 2, 3, 12}
    assert item.dows == {1, 2, 3, 4, 5}
    assert one("0 0 * * 7 task").dows == {0}
    assert one("0 0 * * 5-7 task").dows == {5, 6, 0}
    assert one("0 0 * * 0,7 task").dows == {0}


def test_comments_blank_lines_and_line_numbers() -> None:
    items = parse_crontab("# header\n\n  0 4 * * * a  \r\n\t# indented comment\n5 4 * * * b\n")
    assert [(i.identifier, i.line) for i in items] == [("a", 3), ("b", 5)]


def test_task_names_with_colons_slashes_and_dashes() -> None:
    assert one("* * * * * nested/dir:task-name_1").task == "nested/dir:task-name_1"


def test_all_options() -> None:
    item = one("* * * * * task ?id=x&max=3&queue=q&priority=-1&jobKey=k&jobKeyMode=preserve_run_at")
    assert item.identifier == "x"
    assert item.task == "task"
    assert item.max_attempts == 3
    assert item.queue_name == "q"
    assert item.priority == -1
    assert item.job_key == "k"
    assert item.job_key_mode == "preserve_run_at"


def test_fill_time_phrases() -> None:
    assert one("* * * * * t ?fill=1d2h").fill == dt.timedelta(days=1, hours=2)
    assert one("* * * * * t ?fill=4w3d2h1m30s").fill == dt.timedelta(
        weeks=4, days=3, hours=2, minutes=1, seconds=30
    )
    assert one("* * * * * t ?fill=3m").fill == dt.timedelta(minutes=3)


def test_job_key_defaults_to_replace_mode() -> None:
    assert one("* * * * * t ?jobKey=k").job_key_mode == "replace"


def test_option_values_are_url_decoded() -> None:
    assert one("* * * * * t ?jobKey=a%20b%26c").job_key == "a b&c"


def test_json5_payload() -> None:
    item = one("* * * * * task {a: 1, 'b': \"two\", trailing: [1,2,],}")
    assert item.payload == {"a": 1, "b": "two", "trailing": [1, 2]}


def test_options_and_payload_together() -> None:
    item = one("0 4 * * * task ?fill=1h&max=2 {nested: {deep: true}, list: []}")
    assert item.fill == dt.timedelta(hours=1)
    assert item.max_attempts == 2
    assert item.payload == {"nested": {"deep": True}, "list": []}


def test_job_spec_merges_cron_metadata_like_graphile_worker() -> None:
    item = one("* * * * * task ?queue=q&jobKey=k {a: 1.0, _cron: 'mine', z: 'é'}")
    spec = item.job_spec(utc(2024, 1, 2, 3, 4), backfilled=True)
    # A user's own _cron key keeps its place (JavaScript spread), its value is replaced.
    assert json.dumps(spec["payload"], separators=(",", ":"), ensure_ascii=False) == (
        '{"a":1,"_cron":{"ts":"2024-01-02T03:04:00.000Z","backfilled":true},"z":"é"}'
    )
    assert spec["identifier"] == "task"
    assert spec["queue_name"] == "q"
    assert spec["job_key_mode"] == "replace"
    assert one("* * * * * bare").job_spec(utc(2024, 1, 1), False)["payload"] == {
        "_cron": {"ts": "2024-01-01T00:00:00.000Z", "backfilled": False}
    }


# --- JSON5 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", {}),
        ("{a: 1, b: [1, 2, 3,], }", {"a": 1, "b": [1, 2, 3]}),
        ("{'single': 'it\\'s', \"double\": \"q\\\"\"}", {"single": "it's", "double": 'q"'}),
        ("{/* block */ a: 1, // line\n b: 2}", {"a": 1, "b": 2}),
        ("{hex: 0x1F, neg: -0xA, plus: +3, lead: .5, trail: 5., exp: 1e3, f: 2.5}", None),
        ("{$id: 1, _x: 2, ünï: 3}", {"$id": 1, "_x": 2, "ünï": 3}),
        ("{s: '\\x41\\u00e9\\n\\t\\0'}", {"s": "Aé\n\t\0"}),
        ("{s: 'line \\\ncontinued'}", {"s": "line continued"}),
        ("{t: true, f: false, n: null, nested: {x: [{}]}}", None),
    ],
)
def test_json5_accepts(text: str, expected: object) -> None:
    value = parse_json5(text)
    if expected is not None:
        assert value == expected
    if "hex" in text:
        assert value == {
            "hex": 31,
            "neg": -10,
            "plus": 3,
            "lead": 0.5,
            "trail": 5,
            "exp": 1000,
            "f": 2.5,
        }
        assert isinstance(value["trail"], int) and isinstance(value["exp"], int)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{a: }", "unexpected '}' at column 5"),
        ("{a 1}", "expected ':' after key 'a'"),
        ("{a: 1 b: 2}", "expected ',' or '}'"),
        ("{a: 'open}", "unterminated string"),
        ("{a: NaN}", "NaN and Infinity"),
        ("{a: -Infinity}", "NaN and Infinity"),
        ("{a: 01}", "leading zeros"),
        ("{a: 1} x", "after the value"),
        ("{/* never closed", "unterminated /* comment"),
        ("{1: 2}", "expected a key"),
        ("{a: '\\u12'}", "expected 4 hex digits"),
    ],
)
def test_json5_rejects(text: str, fragment: str) -> None:
    with pytest.raises(Json5Error) as caught:
        parse_json5(text)
    assert fragment in str(caught.value)


# --- invalid lines -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fault"),
    [
        ("61 * * * * t", "minute field '61' is out of range 0-59"),
        ("* 24 * * * t", "hour field '24' is out of range 0-23"),
        ("* * 0 * * t", "day-of-month field '0' is out of range 1-31"),
        ("* * 32 * * t", "day-of-month field '32' is out of range 1-31"),
        ("* * * 0 * t", "month field '0' is out of range 1-12"),
        ("* * * 13 * t", "month field '13' is out of range 1-12"),
        ("* * * * 8 t", "day-of-week field '8' is out of range 0-7"),
        ("1,61 * * * * t", "minute field '1,61': 61 is out of range 0-59"),
        ("* 20-25 * * * t", "hour field '20-25': 24 is out of range 0-23"),
        ("*/0 * * * * t", "minute field '*/0': step in '*/0' must be at least 1"),
        ("1-10/2 * * * * t", "'1-10/2' is not supported; a step goes only on '*'"),
        ("5-1 * * * * t", "range '5-1' must go from low to high"),
        ("1,,2 * * * * t", "minute field '1,,2': '' is not a number"),
        ("* * * * MON t", "day-of-week field 'MON': names are not supported"),
        ("* * * * * t ?foo=1", "unknown option 'foo'; the options are id, fill, max"),
        ("* * * * * t ?fil=1h", "unknown option 'fil' (did you mean 'fill'?)"),
        ("* * * * * t ?id=a&id=b", "option 'id' is given more than once"),
        ("* * * * * t ?id=1x", "option id='1x': expected a letter or '_'"),
        ("* * * * * t ?fill=1x", "option fill='1x': expected a duration"),
        ("* * * * * t ?fill=", "option fill='': expected a duration"),
        ("* * * * * t ?max=0", "option max='0': expected a whole number from 1 to 32767"),
        ("* * * * * t ?max=x", "option max='x'"),
        ("* * * * * t ?priority=99999", "option priority='99999': expected a whole number"),
        ("* * * * * t ?queue=a%20b", "option queue='a b'"),
        ("* * * * * t ?jobKey=", "option jobKey='': expected a non-empty key"),
        ("* * * * * t ?jobKey=k&jobKeyMode=unsafe_dedupe", "expected replace or preserve_run_at"),
        ("* * * * * t ?jobKeyMode=replace", "option jobKeyMode needs a jobKey"),
        ("* * * * * 9t", "invalid task identifier '9t'"),
        ("* * * * * t.x", "invalid task identifier 't.x'"),
        ("* * * * * * t", "invalid task identifier '*' (a sixth time field?"),
        ("* * * * * t {a: }", "payload is not valid JSON5: unexpected '}' at column 5"),
        ("* * * * * t {a: 1", "unexpected '{a: 1' after the task identifier"),
        ("* * * * * t extra", "unexpected 'extra' after the task identifier"),
        ("* * * * * t {a: 1} ?max=1", "options start with '?' and come first"),
        ("* * * * * t ? {a: 1}", "'?' must be followed by options"),
        ("* * * * t", "expected five time fields"),
        ("0 4 * *", "expected five time fields"),
        ("0 0 31 2 * t", "'31 2' never happens"),
        ("0 0 30,31 2 * t", "never happens"),
        ("* * * * * " + "t" * 129, "longer than 128 characters"),
    ],
)
def test_invalid_lines_name_line_and_fault(line: str, fault: str) -> None:
    message = error_of(f"# first line is a comment\n{line}")
    assert message.startswith("kongtask.yaml: crontab line 2: "), message
    assert fault in message, message


def test_feb_31_with_a_weekday_is_fine_by_the_or_rule() -> None:
    assert one("0 0 31 2 1 t").dows == {1}


def test_duplicate_identifier_names_both_lines() -> None:
    message = error_of("* * * * * a\n0 * * * * b ?id=a\n")
    assert message == (
        "kongtask.yaml: crontab line 2: duplicate identifier 'a' (also on line 1); "
        "give one of them its own ?id=..."
    )


def test_same_task_twice_with_distinct_ids_is_fine() -> None:
    items = parse_crontab("* * * * * t ?id=one\n0 * * * * t ?id=two")
    assert [i.identifier for i in items] == ["one", "two"]


# --- loading from the configuration ---------------------------------------------------------


def test_load_inline_crontab_error_names_config_file(tmp_path: Path) -> None:
    path = tmp_path / "kongtask.yaml"
    path.write_text("crontab: |\n  * * * * * ok\n  # c\n  61 * * * * bad\n")
    config = load_config(path, environ={})
    with pytest.raises(ConfigError) as caught:
        load_crontab(config)
    assert caught.value.message == (
        f"{path}: crontab line 3: minute field '61' is out of range 0-59"
    )


def test_load_crontab_file(tmp_path: Path) -> None:
    (tmp_path / "crontab").write_text("0 4 * * * cleanup ?max=3\n")
    path = tmp_path / "kongtask.yaml"
    path.write_text("crontab_file: crontab\n")
    items = load_crontab(load_config(path, environ={}))
    assert [(i.task, i.max_attempts) for i in items] == [("cleanup", 3)]
    (tmp_path / "crontab").write_text("0 4 * * * cleanup ?max=3\n0 4 * * bad\n")
    with pytest.raises(ConfigError) as caught:
        load_crontab(load_config(path, environ={}))
    assert caught.value.message.startswith(f"{tmp_path / 'crontab'}: line 2: expected five")


def test_missing_crontab_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "kongtask.yaml"
    path.write_text("crontab_file: nowhere\n")
    with pytest.raises(ConfigError) as caught:
        load_crontab(load_config(path, environ={}))
    assert caught.value.message == (
        f"{path}: crontab_file: cannot read {tmp_path / 'nowhere'}: No such file or directory"
    )


def test_no_crontab_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "kongtask.yaml"
    path.write_text("schema: graphile_worker\n")
    assert load_crontab(load_config(path, environ={})) == []


# --- tick maths in UTC ------------------------------------------------------------------------


def test_next_fire_time_utc() -> None:
    item = one("*/15 * * * * t")
    assert next_fire_time(item, utc(2024, 1, 1, 12, 0)) == utc(2024, 1, 1, 12, 15)
    assert next_fire_time(item, utc(2024, 1, 1, 12, 14, 59)) == utc(2024, 1, 1, 12, 15)
    assert next_fire_time(item, utc(2024, 1, 1, 23, 50)) == utc(2024, 1, 2, 0, 0)
    assert next_fire_time(one("0 0 29 2 * t"), utc(2024, 3, 1)) == utc(2028, 2, 29)
    assert next_fire_time(one("0 12 * 6 * t"), utc(2024, 7, 1)) == utc(2025, 6, 1, 12)


def test_fire_times_is_half_open_and_ordered() -> None:
    times = fire_times(one("0 * * * * t"), utc(2024, 1, 1, 0), utc(2024, 1, 1, 3))
    assert times == [utc(2024, 1, 1, h) for h in range(3)]


def test_day_of_month_and_day_of_week_or_rule() -> None:
    # 2024-01-01 is a Monday. Both restricted: the 13th OR any Friday.
    both = fire_times(one("0 0 13 * 5 t"), utc(2024, 1, 1), utc(2024, 2, 1))
    assert [t.day for t in both] == [5, 12, 13, 19, 26]
    # Only day-of-month restricted: the 13th alone.
    date_only = fire_times(one("0 0 13 * * t"), utc(2024, 1, 1), utc(2024, 2, 1))
    assert [t.day for t in date_only] == [13]
    # Only day-of-week restricted: Fridays alone.
    dow_only = fire_times(one("0 0 * * 5 t"), utc(2024, 1, 1), utc(2024, 2, 1))
    assert [t.day for t in dow_only] == [5, 12, 19, 26]
    # A day-of-week field that lists every day (0-7) does not restrict.
    assert fire_times(one("0 0 13 * 0-7 t"), utc(2024, 1, 1), utc(2024, 2, 1)) == date_only


def test_weekdays_range() -> None:
    times = fire_times(one("30 9 * * 1-5 t"), utc(2024, 1, 1), utc(2024, 1, 8))
    assert [t.day for t in times] == [1, 2, 3, 4, 5]
    assert all((t.hour, t.minute) == (9, 30) for t in times)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire_time(one("* * * * * t"), dt.datetime(2024, 1, 1))


# --- tick maths across DST changes ------------------------------------------------------------

# 2024-03-10 02:00 EST -> 03:00 EDT; 2024-11-03 02:00 EDT -> 01:00 EST
NEW_YORK = "America/New_York"
# 2024-03-31 02:00 CET -> 03:00 CEST; 2024-10-27 03:00 CEST -> 02:00 CET
BERLIN = "Europe/Berlin"


def local(zone: str, times: list[dt.datetime]) -> list[str]:
    return [t.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M %Z") for t in times]


def test_spring_forward_0230_runs_once_at_the_end_of_the_gap() -> None:
    times = fire_times(one("30 2 * * * t"), utc(2024, 3, 9), utc(2024, 3, 12), NEW_YORK)
    assert local(NEW_YORK, times) == ["03-09 02:30 EST", "03-10 03:00 EDT", "03-11 02:30 EDT"]
    assert times[1] == utc(2024, 3, 10, 7, 0)
    times = fire_times(one("30 2 * * * t"), utc(2024, 3, 30), utc(2024, 4, 2), BERLIN)
    assert local(BERLIN, times) == ["03-30 02:30 CET", "03-31 03:00 CEST", "04-01 02:30 CEST"]


def test_fall_back_0130_runs_once_at_its_first_occurrence() -> None:
    times = fire_times(one("30 1 * * * t"), utc(2024, 11, 2), utc(2024, 11, 5), NEW_YORK)
    assert local(NEW_YORK, times) == ["11-02 01:30 EDT", "11-03 01:30 EDT", "11-04 01:30 EST"]
    assert times[1] == utc(2024, 11, 3, 5, 30)
    times = fire_times(one("30 2 * * * t"), utc(2024, 10, 26), utc(2024, 10, 29), BERLIN)
    assert local(BERLIN, times) == ["10-26 02:30 CEST", "10-27 02:30 CEST", "10-28 02:30 CET"]


def test_hourly_runs_every_real_hour_across_spring_forward() -> None:
    times = fire_times(one("0 * * * * t"), utc(2024, 3, 10, 4), utc(2024, 3, 10, 9), NEW_YORK)
    assert times == [utc(2024, 3, 10, h) for h in range(4, 9)]
    assert local(NEW_YORK, times) == [
        "03-09 23:00 EST",
        "03-10 00:00 EST",
        "03-10 01:00 EST",
        "03-10 03:00 EDT",
        "03-10 04:00 EDT",
    ]


def test_hourly_runs_every_real_hour_across_fall_back() -> None:
    times = fire_times(one("0 * * * * t"), utc(2024, 11, 3, 3), utc(2024, 11, 3, 8), NEW_YORK)
    assert times == [utc(2024, 11, 3, h) for h in range(3, 8)]
    assert local(NEW_YORK, times) == [
        "11-02 23:00 EDT",
        "11-03 00:00 EDT",
        "11-03 01:00 EDT",
        "11-03 01:00 EST",
        "11-03 02:00 EST",
    ]
    berlin = fire_times(one("0 * * * * t"), utc(2024, 10, 26, 23), utc(2024, 10, 27, 3), BERLIN)
    assert local(BERLIN, berlin) == [
        "10-27 01:00 CEST",
        "10-27 02:00 CEST",
        "10-27 02:00 CET",
        "10-27 03:00 CET",
    ]


def test_every_minute_never_stalls_or_doubles_across_dst() -> None:
    for start in (utc(2024, 3, 10, 5), utc(2024, 11, 3, 4)):
        times = fire_times(one("* * * * * t"), start, start + dt.timedelta(hours=4), NEW_YORK)
        assert times == [start + dt.timedelta(minutes=m) for m in range(240)]


def test_fixed_hour_minute_steps_collapse_into_one_run_after_the_gap() -> None:
    times = fire_times(one("*/15 2 * * * t"), utc(2024, 3, 10), utc(2024, 3, 11), NEW_YORK)
    assert local(NEW_YORK, times) == ["03-10 03:00 EDT"]
    times = fire_times(one("*/15 1 * * * t"), utc(2024, 11, 3), utc(2024, 11, 4), NEW_YORK)
    assert local(NEW_YORK, times) == [f"11-03 01:{m:02d} EDT" for m in (0, 15, 30, 45)]


def test_daily_job_outside_the_changes_keeps_its_wall_time() -> None:
    times = fire_times(one("0 9 * * * t"), utc(2024, 3, 8), utc(2024, 3, 13), NEW_YORK)
    assert [t.astimezone(ZoneInfo(NEW_YORK)).hour for t in times] == [9] * 5
    assert [t.hour for t in times] == [14, 14, 13, 13, 13]


def test_a_skipped_day_still_runs_its_jobs() -> None:
    # Samoa skipped 30 December 2011 entirely (UTC-10 -> UTC+14).
    item = one("0 12 30 12 * t")
    assert next_fire_time(item, utc(2011, 12, 1), "Pacific/Apia") == utc(2011, 12, 30, 10)


def test_items_are_plain_frozen_data() -> None:
    item = one("* * * * * t {a: 1}")
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.task = "other"  # type: ignore[misc]
