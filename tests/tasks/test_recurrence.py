"""Recurring tasks: RRULE validation and normalisation, and the next due date of a series (pure unit tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

import pytest
from pydantic import AfterValidator, BaseModel, ValidationError

from todo_api.tasks.recurrence import RecurrenceBasis, next_due, normalize_rrule, validate_series

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(moment: datetime, zone: str) -> datetime:
    return moment.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def after(
    rule: str,
    due: datetime,
    completed_at: datetime | None = None,
    *,
    series_start: datetime | None = None,
    basis: RecurrenceBasis = "due",
    time_zone: str = "UTC",
    occurrence_index: int = 1,
) -> datetime | None:
    """The next due date after a task due at `due`, completed on time unless `completed_at` says otherwise."""
    return next_due(
        rule,
        basis=basis,
        time_zone=time_zone,
        series_start=series_start or due,
        due=due,
        completed_at=completed_at or due,
        occurrence_index=occurrence_index,
    )


def series(rule: str, first_due: datetime, length: int, *, time_zone: str = "UTC") -> list[datetime]:
    """The due dates of a series whose tasks are all completed when due, the first one included."""
    dues = [first_due]
    while len(dues) < length:
        following = after(rule, dues[-1], series_start=first_due, time_zone=time_zone, occurrence_index=len(dues))
        assert following is not None
        dues.append(following)
    return dues


# 2026-01-05 is a Monday.


def test_daily() -> None:
    assert series("FREQ=DAILY", utc(2026, 1, 5, 9), 3) == [utc(2026, 1, 5, 9), utc(2026, 1, 6, 9), utc(2026, 1, 7, 9)]


def test_weekly_on_given_days() -> None:
    assert series("FREQ=WEEKLY;BYDAY=MO,WE", utc(2026, 1, 5, 9), 4) == [
        utc(2026, 1, 5, 9),
        utc(2026, 1, 7, 9),
        utc(2026, 1, 12, 9),
        utc(2026, 1, 14, 9),
    ]


def test_a_first_due_date_off_the_rule_is_followed_by_the_rule() -> None:
    assert after("FREQ=WEEKLY;BYDAY=MO,WE", utc(2026, 1, 6, 9)) == utc(2026, 1, 7, 9)  # from a Tuesday


def test_monthly_on_the_31st_skips_the_months_without_one() -> None:
    assert series("FREQ=MONTHLY;BYMONTHDAY=31", utc(2026, 1, 31, 9), 4) == [
        utc(2026, 1, 31, 9),
        utc(2026, 3, 31, 9),
        utc(2026, 5, 31, 9),
        utc(2026, 7, 31, 9),
    ]


def test_monthly_on_the_last_weekday() -> None:
    assert series("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", utc(2026, 1, 30, 9), 4) == [
        utc(2026, 1, 30, 9),  # Saturday the 31st is not a weekday
        utc(2026, 2, 27, 9),
        utc(2026, 3, 31, 9),
        utc(2026, 4, 30, 9),
    ]


def test_monthly_on_the_last_friday() -> None:
    assert series("FREQ=MONTHLY;BYDAY=-1FR", utc(2026, 1, 30, 9), 3) == [
        utc(2026, 1, 30, 9),
        utc(2026, 2, 27, 9),
        utc(2026, 3, 27, 9),
    ]


def test_yearly() -> None:
    assert series("FREQ=YEARLY", utc(2026, 3, 15, 9), 3) == [
        utc(2026, 3, 15, 9),
        utc(2027, 3, 15, 9),
        utc(2028, 3, 15, 9),
    ]


def test_yearly_from_a_leap_day_waits_for_the_next_one() -> None:
    assert after("FREQ=YEARLY", utc(2024, 2, 29, 9)) == utc(2028, 2, 29, 9)


def test_interval() -> None:
    assert series("FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH", utc(2026, 1, 6, 9), 4) == [
        utc(2026, 1, 6, 9),
        utc(2026, 1, 8, 9),
        utc(2026, 1, 20, 9),
        utc(2026, 1, 22, 9),
    ]
    assert series("FREQ=MONTHLY;INTERVAL=3", utc(2026, 1, 15, 9), 3) == [
        utc(2026, 1, 15, 9),
        utc(2026, 4, 15, 9),
        utc(2026, 7, 15, 9),
    ]


def test_week_start_decides_which_weeks_an_interval_skips() -> None:
    # RFC 5545 3.3.10's own example: the same rule gives different dates with WKST=MO and WKST=SU.
    start = utc(1997, 8, 5, 9)
    assert series("FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=MO", start, 4) == [
        start,
        utc(1997, 8, 10, 9),
        utc(1997, 8, 19, 9),
        utc(1997, 8, 24, 9),
    ]
    assert series("FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=SU", start, 4) == [
        start,
        utc(1997, 8, 17, 9),
        utc(1997, 8, 19, 9),
        utc(1997, 8, 31, 9),
    ]


def test_a_task_done_late_is_followed_by_one_task_after_its_completion() -> None:
    due = utc(2026, 1, 5, 9)
    assert after("FREQ=DAILY", due, utc(2026, 1, 10, 12)) == utc(2026, 1, 11, 9)
    assert after("FREQ=DAILY", due, utc(2026, 1, 10, 8)) == utc(2026, 1, 10, 9)
    assert after("FREQ=WEEKLY;BYDAY=MO", due, utc(2026, 1, 15, 12)) == utc(2026, 1, 19, 9)


def test_basis_due_keeps_the_series_rhythm() -> None:
    # Every other day from the series' first due date, whatever day this task was due or done.
    first = utc(2026, 1, 5, 9)
    assert after("FREQ=DAILY;INTERVAL=2", utc(2026, 1, 9, 9), utc(2026, 1, 9, 10), series_start=first) == utc(
        2026, 1, 11, 9
    )
    assert after("FREQ=DAILY;INTERVAL=2", utc(2026, 1, 9, 9), utc(2026, 1, 11, 10), series_start=first) == utc(
        2026, 1, 13, 9
    )


def test_a_task_done_early_is_followed_by_the_next_occurrence_after_its_due_date() -> None:
    assert after("FREQ=DAILY", utc(2026, 1, 5, 9), utc(2026, 1, 2, 12)) == utc(2026, 1, 6, 9)


def test_basis_completion_restarts_the_rule_when_the_task_is_done() -> None:
    rule = "FREQ=DAILY;INTERVAL=3"
    due = utc(2026, 1, 5, 9)
    assert after(rule, due, utc(2026, 1, 10, 15), basis="completion") == utc(2026, 1, 13, 9)
    assert after(rule, due, utc(2026, 1, 10, 7), basis="completion") == utc(2026, 1, 13, 9)  # not later that day
    assert after(rule, due, utc(2026, 1, 3, 12), basis="completion") == utc(2026, 1, 6, 9)  # done early
    assert after("FREQ=WEEKLY;BYDAY=MO,FR", due, utc(2026, 1, 12, 7), basis="completion") == utc(2026, 1, 16, 9)


def test_basis_completion_takes_the_local_day_of_completion_and_the_local_time_of_the_due_date() -> None:
    # Due 09:00 in Berlin (08:00 UTC); done at 00:30 on 11 January in Berlin, still the 10th in UTC.
    assert after(
        "FREQ=DAILY;INTERVAL=3", utc(2026, 1, 5, 8), utc(2026, 1, 10, 23, 30), basis="completion", time_zone=BERLIN
    ) == utc(2026, 1, 14, 8)


def test_basis_completion_is_still_bounded_by_count_and_until() -> None:
    due, done = utc(2026, 1, 5, 9), utc(2026, 1, 10, 15)
    assert after("FREQ=DAILY;INTERVAL=3;COUNT=2", due, done, basis="completion", occurrence_index=1) == utc(
        2026, 1, 13, 9
    )
    assert after("FREQ=DAILY;INTERVAL=3;COUNT=2", due, done, basis="completion", occurrence_index=2) is None
    assert after("FREQ=DAILY;INTERVAL=3;UNTIL=20260113", due, done, basis="completion") == utc(2026, 1, 13, 9)
    assert after("FREQ=DAILY;INTERVAL=3;UNTIL=20260112", due, done, basis="completion") is None


def test_berlin_nine_oclock_stays_nine_oclock_across_both_dst_changes() -> None:
    march = series("FREQ=DAILY", utc(2026, 3, 27, 8), 4, time_zone=BERLIN)
    assert march == [utc(2026, 3, 27, 8), utc(2026, 3, 28, 8), utc(2026, 3, 29, 7), utc(2026, 3, 30, 7)]
    october = series("FREQ=DAILY", utc(2026, 10, 24, 7), 3, time_zone=BERLIN)
    assert october == [utc(2026, 10, 24, 7), utc(2026, 10, 25, 8), utc(2026, 10, 26, 8)]
    assert {local(moment, BERLIN).hour for moment in march + october} == {9}


def test_new_york_nine_oclock_stays_nine_oclock_across_both_dst_changes() -> None:
    assert series("FREQ=DAILY", utc(2026, 3, 7, 14), 3, time_zone=NEW_YORK) == [
        utc(2026, 3, 7, 14),
        utc(2026, 3, 8, 13),
        utc(2026, 3, 9, 13),
    ]
    assert series("FREQ=WEEKLY", utc(2026, 10, 25, 13), 2, time_zone=NEW_YORK) == [
        utc(2026, 10, 25, 13),
        utc(2026, 11, 1, 14),
    ]


def test_a_local_time_in_the_spring_gap_moves_forward_by_the_gap() -> None:
    # 02:30 does not exist in Berlin on 29 March 2026: it becomes 03:30 CEST (01:30 UTC), then 02:30 again.
    assert series("FREQ=DAILY", utc(2026, 3, 28, 1, 30), 3, time_zone=BERLIN) == [
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 30, 0, 30),
    ]
    assert local(utc(2026, 3, 29, 1, 30), BERLIN) == datetime(2026, 3, 29, 3, 30)
    # 02:30 on 8 March 2026 in New York: 03:30 EDT (07:30 UTC).
    assert after("FREQ=DAILY", utc(2026, 3, 7, 7, 30), time_zone=NEW_YORK) == utc(2026, 3, 8, 7, 30)


def test_an_ambiguous_local_time_takes_its_first_instant() -> None:
    # 02:30 happens twice in Berlin on 25 October 2026: first at 00:30 UTC (CEST), then at 01:30 UTC (CET).
    assert series("FREQ=DAILY", utc(2026, 10, 24, 0, 30), 3, time_zone=BERLIN) == [
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]
    # Done between the two 02:30s: the second one is the same occurrence, not another.
    assert after("FREQ=DAILY", utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1), time_zone=BERLIN) == utc(
        2026, 10, 26, 1, 30
    )
    # 01:30 on 1 November 2026 in New York: 05:30 UTC (EDT), not 06:30 (EST).
    assert after("FREQ=DAILY", utc(2026, 10, 31, 5, 30), time_zone=NEW_YORK) == utc(2026, 11, 1, 5, 30)


def test_count_gives_that_many_tasks_in_all() -> None:
    rule, first = "FREQ=DAILY;COUNT=3", utc(2026, 1, 5, 9)
    assert series(rule, first, 3) == [first, utc(2026, 1, 6, 9), utc(2026, 1, 7, 9)]
    assert after(rule, utc(2026, 1, 7, 9), series_start=first, occurrence_index=3) is None
    # Occurrences skipped by a late completion do not count: three tasks all the same.
    assert after(rule, first, utc(2026, 1, 20, 12), occurrence_index=1) == utc(2026, 1, 21, 9)
    assert after(rule, utc(2026, 1, 21, 9), series_start=first, occurrence_index=2) == utc(2026, 1, 22, 9)
    assert after(rule, utc(2026, 1, 22, 9), series_start=first, occurrence_index=3) is None


@pytest.mark.parametrize(
    ("until", "last"),
    [
        ("20260107", utc(2026, 1, 7, 9)),  # a date: the whole day
        ("20260107T090000Z", utc(2026, 1, 7, 9)),
        ("20260107T085959Z", utc(2026, 1, 6, 9)),
    ],
)
def test_until_is_inclusive(until: str, last: datetime) -> None:
    rule, first = f"FREQ=DAILY;UNTIL={until}", utc(2026, 1, 5, 9)
    dues = [first]
    while (following := after(rule, dues[-1], series_start=first)) is not None:
        dues.append(following)
    assert dues[-1] == last
    assert len(dues) == (last - first).days + 1


def test_a_floating_until_is_read_in_the_time_zone() -> None:
    first = utc(2026, 1, 5, 8)  # 09:00 in Berlin
    assert after("FREQ=DAILY;UNTIL=20260106T090000", first, time_zone=BERLIN) == utc(2026, 1, 6, 8)
    assert after("FREQ=DAILY;UNTIL=20260106T083000", first, time_zone=BERLIN) is None  # 07:30 UTC
    assert after("FREQ=DAILY;UNTIL=20260106", utc(2026, 1, 5, 23), time_zone=BERLIN) is None  # the 7th in Berlin


def test_a_series_started_centuries_ago_keeps_its_rhythm() -> None:
    first, done = utc(1226, 3, 1, 9), utc(2026, 5, 10, 12)
    for rule, step in [("FREQ=DAILY", 1), ("FREQ=DAILY;INTERVAL=5", 5), ("FREQ=WEEKLY;INTERVAL=2", 14)]:
        expected = first + timedelta(days=((done - first).days // step + 1) * step)
        assert after(rule, first, done) == expected, rule
    assert after("FREQ=MONTHLY;INTERVAL=7;BYMONTHDAY=31", first, done) == utc(2026, 7, 31, 9)  # 9,604 months on


def test_sparse_rules_are_found_decades_ahead() -> None:
    # The fifth Monday of February: 29 February 2016, then 2044, 2072, 2112 (2100 is no leap year).
    rule = "FREQ=YEARLY;BYMONTH=2;BYDAY=5MO"
    assert after(rule, utc(2016, 2, 29, 9)) == utc(2044, 2, 29, 9)
    assert after(rule, utc(2016, 2, 29, 9), utc(2073, 1, 1)) == utc(2112, 2, 29, 9)


def test_no_next_task_past_year_9999() -> None:
    assert after("FREQ=DAILY", utc(9999, 12, 31, 9)) is None
    assert after("FREQ=WEEKLY;BYDAY=FR,SA", utc(9999, 12, 31, 9)) is None  # a Friday
    assert after("FREQ=DAILY", utc(9999, 12, 31, 3), time_zone=NEW_YORK) is None  # 22:00 local: past 9999 in UTC
    assert after("FREQ=DAILY", utc(1, 1, 1, 9)) == utc(1, 1, 2, 9)


@pytest.mark.parametrize(
    ("value", "normal"),
    [
        ("FREQ=WEEKLY;BYDAY=MO,WE", "FREQ=WEEKLY;BYDAY=MO,WE"),
        ("RRULE:FREQ=DAILY", "FREQ=DAILY"),
        ("rrule:freq=weekly;byday=we,mo,MO;interval=02", "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE"),
        ("  Rrule: FREQ=MONTHLY;BYSETPOS=-1;BYDAY=+1MO,-01fr  ", "FREQ=MONTHLY;BYDAY=1MO,-1FR;BYSETPOS=-1"),
        (
            "WKST=SU;BYMONTH=12,+6;FREQ=YEARLY;UNTIL=20301231t235959z",
            "FREQ=YEARLY;UNTIL=20301231T235959Z;BYMONTH=6,12;WKST=SU",
        ),
        ("BYMONTHDAY=-1,15,1;COUNT=010;FREQ=MONTHLY", "FREQ=MONTHLY;COUNT=10;BYMONTHDAY=-1,1,15"),
    ],
)
def test_rules_are_normalised(value: str, normal: str) -> None:
    assert normalize_rrule(value) == normal
    assert normalize_rrule(normal) == normal


NO_HOURS = "is not supported; the time of day comes from the due date"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "recurrence must be NAME=VALUE parts separated by ';', such as FREQ=WEEKLY;BYDAY=MO"),
        ("every monday", "recurrence must be NAME=VALUE parts separated by ';', such as FREQ=WEEKLY;BYDAY=MO"),
        ("FREQ=DAILY;", "recurrence must be NAME=VALUE parts separated by ';', such as FREQ=WEEKLY;BYDAY=MO"),
        ("FREQ=", "recurrence must be NAME=VALUE parts separated by ';', such as FREQ=WEEKLY;BYDAY=MO"),
        ("BYDAY=MO", "FREQ must be one of DAILY, WEEKLY, MONTHLY, YEARLY"),
        ("FREQ=HOURLY", "FREQ must be one of DAILY, WEEKLY, MONTHLY, YEARLY"),
        ("FREQ=MINUTELY", "FREQ must be one of DAILY, WEEKLY, MONTHLY, YEARLY"),
        ("FREQ=DAILY;BYHOUR=9", f"BYHOUR {NO_HOURS}"),
        ("FREQ=DAILY;BYMINUTE=30", f"BYMINUTE {NO_HOURS}"),
        ("FREQ=DAILY;BYSECOND=0", f"BYSECOND {NO_HOURS}"),
        ("FREQ=YEARLY;BYYEARDAY=100", "BYYEARDAY is not supported; use BYMONTH with BYMONTHDAY"),
        ("FREQ=YEARLY;BYWEEKNO=20", "BYWEEKNO is not supported; use FREQ=WEEKLY with INTERVAL"),
        ("DTSTART=20260101T090000Z;FREQ=DAILY", "DTSTART is not supported; the series starts at the task's due date"),
        (
            "FREQ=DAILY;X-NAME=1",
            "unknown recurrence part 'X-NAME'; the parts are "
            "FREQ, INTERVAL, COUNT, UNTIL, BYMONTH, BYMONTHDAY, BYDAY, BYSETPOS, WKST",
        ),
        ("FREQ=DAILY;FREQ=WEEKLY", "FREQ may be given only once"),
        ("FREQ=WEEKLY;BYDAY=MO;BYDAY=TU", "BYDAY may be given only once"),
        ("FREQ=DAILY;COUNT=0", "COUNT must be a positive integer"),
        ("FREQ=DAILY;COUNT=-1", "COUNT must be a positive integer"),
        ("FREQ=DAILY;COUNT=three", "COUNT must be a positive integer"),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL must be a positive integer up to 1000"),
        ("FREQ=DAILY;INTERVAL=1001", "INTERVAL must be a positive integer up to 1000"),
        ("FREQ=DAILY;INTERVAL=１", "INTERVAL must be a positive integer up to 1000"),  # a full-width digit
        ("FREQ=YEARLY;BYMONTH=13", "BYMONTH must be a comma-separated list of numbers from 1 to 12"),
        ("FREQ=YEARLY;BYMONTH=-1", "BYMONTH must be a comma-separated list of numbers from 1 to 12"),
        ("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY must be a comma-separated list of numbers from 1 to 31 or -31 to -1"),
        (
            "FREQ=MONTHLY;BYMONTHDAY=1,,2",
            "BYMONTHDAY must be a comma-separated list of numbers from 1 to 31 or -31 to -1",
        ),
        (
            "FREQ=MONTHLY;BYDAY=MO;BYSETPOS=367",
            "BYSETPOS must be a comma-separated list of numbers from 1 to 366 or -366 to -1",
        ),
        (
            "FREQ=WEEKLY;BYDAY=MONDAY",
            "BYDAY must be a comma-separated list of MO, TU, WE, TH, FR, SA, SU, each perhaps "
            "numbered from 1 to 53 or -53 to -1 (1MO: the first Monday, -1FR: the last Friday)",
        ),
        (
            "FREQ=YEARLY;BYDAY=0MO",
            "BYDAY must be a comma-separated list of MO, TU, WE, TH, FR, SA, SU, each perhaps "
            "numbered from 1 to 53 or -53 to -1 (1MO: the first Monday, -1FR: the last Friday)",
        ),
        ("FREQ=WEEKLY;WKST=XX", "WKST must be one of MO, TU, WE, TH, FR, SA, SU"),
        ("FREQ=DAILY;UNTIL=2026-12-31", "UNTIL must be a date (YYYYMMDD) or a UTC date-time (YYYYMMDDTHHMMSSZ)"),
        ("FREQ=DAILY;UNTIL=20260230", "UNTIL must be a date (YYYYMMDD) or a UTC date-time (YYYYMMDDTHHMMSSZ)"),
        ("FREQ=DAILY;UNTIL=20261231T250000Z", "UNTIL must be a date (YYYYMMDD) or a UTC date-time (YYYYMMDDTHHMMSSZ)"),
        ("FREQ=DAILY;COUNT=3;UNTIL=20261231", "COUNT and UNTIL cannot both be given"),
        ("FREQ=WEEKLY;BYMONTHDAY=1", "BYMONTHDAY cannot be used with FREQ=WEEKLY"),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "BYMONTHDAY never falls in the months of BYMONTH"),
        ("FREQ=DAILY;BYMONTH=4,6;BYMONTHDAY=31,-31", "BYMONTHDAY never falls in the months of BYMONTH"),
        ("FREQ=WEEKLY;BYDAY=1MO", "BYDAY with a number (1MO, -1FR) needs FREQ=MONTHLY or FREQ=YEARLY"),
        ("FREQ=MONTHLY;BYDAY=6MO", "BYDAY numbers within a month run from 1 to 5 (or -5 to -1)"),
        ("FREQ=YEARLY;BYMONTH=3;BYDAY=-6FR", "BYDAY numbers within a month run from 1 to 5 (or -5 to -1)"),
        ("FREQ=DAILY;BYMONTH=1;BYSETPOS=1", "BYSETPOS needs FREQ=WEEKLY, MONTHLY or YEARLY"),
        ("FREQ=MONTHLY;BYSETPOS=1", "BYSETPOS needs BYDAY, BYMONTHDAY or BYMONTH"),
        ("FREQ=DAILY;" + "INTERVAL=1;" * 50, "recurrence must be at most 500 characters"),
    ],
)
def test_invalid_rules_name_the_wrong_part(value: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        normalize_rrule(value)
    assert str(raised.value) == message


def test_yearly_53rd_weekday_is_allowed_without_bymonth() -> None:
    assert normalize_rrule("FREQ=YEARLY;BYDAY=53MO") == "FREQ=YEARLY;BYDAY=53MO"


def test_normalize_rrule_is_a_pydantic_validator() -> None:
    class Model(BaseModel):
        recurrence: Annotated[str, AfterValidator(normalize_rrule)]

    assert Model(recurrence="rrule:freq=daily").recurrence == "FREQ=DAILY"
    with pytest.raises(ValidationError) as raised:
        Model(recurrence="FREQ=HOURLY")
    assert raised.value.errors()[0]["msg"] == "Value error, FREQ must be one of DAILY, WEEKLY, MONTHLY, YEARLY"


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=DAILY",
        "FREQ=DAILY;COUNT=1",  # a series of one task
        "FREQ=DAILY;UNTIL=20260105",  # UNTIL on the due date: the same
        "FREQ=DAILY;UNTIL=20260105T090000Z",
        "FREQ=YEARLY;BYMONTH=2;BYDAY=5MO",  # next in 2044
    ],
)
def test_validate_series_accepts(rule: str) -> None:
    validate_series(rule, time_zone=BERLIN, due=utc(2026, 1, 5, 8))


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("FREQ=DAILY;UNTIL=20250105", "UNTIL is before the due date"),
        ("FREQ=DAILY;UNTIL=20250106T075959Z", "UNTIL is before the due date"),
        ("FREQ=DAILY;UNTIL=20250106T085959", "UNTIL is before the due date"),  # floating: Berlin time
        ("FREQ=YEARLY;INTERVAL=4;BYMONTH=2;BYMONTHDAY=29", "recurrence has no occurrence after the due date"),
        ("FREQ=MONTHLY;INTERVAL=2;BYMONTH=2", "recurrence has no occurrence after the due date"),  # odd months
        ("FREQ=DAILY;INTERVAL=7;BYDAY=TU", "recurrence has no occurrence after the due date"),  # Mondays
        ("FREQ=WEEKLY;BYDAY=MO;BYSETPOS=2", "recurrence has no occurrence after the due date"),
        ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=6", "recurrence has no occurrence after the due date"),
        ("FREQ=HOURLY", "FREQ must be one of DAILY, WEEKLY, MONTHLY, YEARLY"),
    ],
)
def test_validate_series_refuses(rule: str, message: str) -> None:
    due = utc(2025, 1, 6, 8)  # a Monday, 09:00 in Berlin; 2025 + 4n is never a leap year
    with pytest.raises(ValueError) as raised:
        validate_series(rule, time_zone=BERLIN, due=due)
    assert str(raised.value) == message


@pytest.mark.parametrize("zone", ["Mars/Olympus", "localtime", "Europe", "", "../etc/passwd"])
def test_unknown_time_zones_are_refused(zone: str) -> None:
    with pytest.raises(ValueError, match="^unknown time zone; use an IANA name such as Europe/Berlin or UTC$"):
        after("FREQ=DAILY", utc(2026, 1, 5, 9), time_zone=zone)


def test_unknown_basis_is_refused() -> None:
    with pytest.raises(ValueError, match="^unknown recurrence basis 'done'$"):
        after("FREQ=DAILY", utc(2026, 1, 5, 9), basis="done")  # type: ignore[arg-type]
