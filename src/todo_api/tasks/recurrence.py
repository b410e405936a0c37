"""Recurring tasks: RFC 5545 RRULE values checked and normalised, and the due date of a series' next task.

Pure (no database, no FastAPI): the models validate with `normalize_rrule` and the service calls `validate_series`
when a rule is set and `next_due` when a recurring task is completed. Rules run on the wall clock of an IANA time
zone (dateutil's rrule on naive local date-times, zoneinfo to turn them into instants), so a 09:00 Europe/Berlin
task stays at 09:00 local across DST changes; every datetime in or out is aware UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, available_timezones

from dateutil.rrule import DAILY, MONTHLY, WEEKLY, YEARLY, rrule, weekdays

RecurrenceBasis = Literal["due", "completion"]
MAX_RRULE_LENGTH = 500
MAX_INTERVAL = 1000  # dateutil steps DAILY/WEEKLY intervals month by month: a huge INTERVAL would spin

_FREQS: dict[str, Literal[0, 1, 2, 3]] = {"DAILY": DAILY, "WEEKLY": WEEKLY, "MONTHLY": MONTHLY, "YEARLY": YEARLY}
_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_PARTS = ("FREQ", "INTERVAL", "COUNT", "UNTIL", "BYMONTH", "BYMONTHDAY", "BYDAY", "BYSETPOS", "WKST")
_SAME_TIME = "the time of day comes from the due date"
_UNSUPPORTED = {
    "BYHOUR": _SAME_TIME,
    "BYMINUTE": _SAME_TIME,
    "BYSECOND": _SAME_TIME,
    "BYYEARDAY": "use BYMONTH with BYMONTHDAY",
    "BYWEEKNO": "use FREQ=WEEKLY with INTERVAL",
    "DTSTART": "the series starts at the task's due date",
}
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_INTEGER = re.compile(r"[+-]?[0-9]{1,3}")
_BYDAY = re.compile(r"([+-]?[0-9]{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_UNTIL = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})(?:T([0-9]{2})([0-9]{2})([0-9]{2})(Z?))?")
# The Gregorian calendar repeats every 400 years to the day and weekday; searches stop this long before year 9999.
_CYCLE = 400
_LAST_SEARCH_YEAR = MAXYEAR - 100


@dataclass(frozen=True)
class _Until:
    text: str
    moment: datetime  # naive: a date (at 00:00), a UTC date-time, or a floating date-time in the rule's time zone
    kind: Literal["date", "utc", "local"]


@dataclass(frozen=True)
class _Rule:
    freq: str
    interval: int | None = None
    count: int | None = None
    until: _Until | None = None
    bymonth: tuple[int, ...] = ()
    bymonthday: tuple[int, ...] = ()
    byday: tuple[tuple[int, int], ...] = ()  # (weekday 0-6, ordinal or 0)
    bysetpos: tuple[int, ...] = ()
    wkst: int | None = None

    def __str__(self) -> str:
        values = {
            "FREQ": self.freq,
            "INTERVAL": self.interval,
            "COUNT": self.count,
            "UNTIL": self.until.text if self.until else None,
            "BYMONTH": ",".join(map(str, self.bymonth)),
            "BYMONTHDAY": ",".join(map(str, self.bymonthday)),
            "BYDAY": ",".join(f"{n or ''}{_DAYS[day]}" for day, n in self.byday),
            "BYSETPOS": ",".join(map(str, self.bysetpos)),
            "WKST": None if self.wkst is None else _DAYS[self.wkst],
        }
        return ";".join(f"{name}={values[name]}" for name in _PARTS if values[name])

    def rrule(self, dtstart: datetime) -> rrule:
        """dateutil's rule from a naive local DTSTART, without COUNT and UNTIL (`next_due` applies those)."""
        return rrule(
            _FREQS[self.freq],
            dtstart=dtstart,
            interval=self.interval or 1,
            wkst=self.wkst or 0,  # RFC 5545's default, not the calendar module's global first weekday
            bymonth=self.bymonth or None,
            bymonthday=self.bymonthday or None,
            byweekday=[weekdays[day](n) if n else weekdays[day] for day, n in self.byday] or None,
            bysetpos=self.bysetpos or None,
        )

    def within_until(self, local: datetime, moment: datetime) -> bool:
        """UNTIL is inclusive: a date takes in the whole local day."""
        until = self.until
        if until is None:
            return True
        if until.kind == "date":
            return local.date() <= until.moment.date()
        return moment <= until.moment.replace(tzinfo=UTC) if until.kind == "utc" else local <= until.moment


def normalize_rrule(value: str) -> str:
    """The canonical form of an RRULE value (a pydantic AfterValidator); ValueError names the part that is wrong.

    Upper-case, no `RRULE:` prefix, parts in a fixed order, numbers without signs or zeros in front, list items
    sorted without repeats: the same rule is always stored as the same text.
    """
    return str(_parse(value))


def validate_series(rule: str, *, time_zone: str, due: datetime) -> None:
    """Raise ValueError unless `rule`, started at `due`, can produce a next task (call it whenever a rule is set).

    A series may end with its first task (COUNT=1, or UNTIL on the due date), but not before it, and a rule that
    never occurs (FREQ=YEARLY;INTERVAL=4;BYMONTH=2;BYMONTHDAY=29 from a year that is not a leap year) is refused.
    """
    parsed, zone = _parse(rule), _zone(time_zone)
    if _first_after(parsed, zone, _local(due, zone), due) is None:
        raise ValueError("recurrence has no occurrence after the due date")
    if not parsed.within_until(_local(due, zone), due):
        raise ValueError("UNTIL is before the due date")


def next_due(
    rule: str,
    *,
    basis: RecurrenceBasis,
    time_zone: str,
    series_start: datetime,
    due: datetime,
    completed_at: datetime,
    occurrence_index: int,
) -> datetime | None:
    """The due date of the task that follows a completed one, or None when the series has ended.

    `series_start` is the due date of the series' first task, `due` and `completed_at` those of the task just
    completed, `occurrence_index` how many tasks the series has had so far (1 for the first).

    - basis "due": the rule's first occurrence (DTSTART = `series_start` in local time, its time of day included)
      later than both `due` and `completed_at`: a task done five days late leaves one next task, not five overdue.
    - basis "completion": the rule restarted on the local day of completion at the local time of `due`; its first
      occurrence after that start and after `completed_at` (FREQ=DAILY;INTERVAL=3: three days after it was done).

    COUNT counts the tasks of the whole series and UNTIL bounds it, whatever the basis. A local time that falls in
    a DST gap moves forward by the gap and an ambiguous one takes its first instant (RFC 5545 3.3.5); a date that
    does not exist (BYMONTHDAY=31 in April) is skipped.
    """
    parsed, zone = _parse(rule), _zone(time_zone)
    if parsed.count is not None and occurrence_index >= parsed.count:
        return None
    if basis == "due":
        found = _first_after(parsed, zone, _local(series_start, zone), max(due, completed_at))
    elif basis == "completion":
        start = datetime.combine(_local(completed_at, zone).date(), _local(due, zone).time())
        found = _first_after(parsed, zone, start, max(completed_at, _to_utc(start, zone)))
    else:
        raise ValueError(f"unknown recurrence basis {basis!r}")
    return found[1] if found and parsed.within_until(*found) else None


def _first_after(rule: _Rule, zone: ZoneInfo, anchor: datetime, after: datetime) -> tuple[datetime, datetime] | None:
    """The first occurrence (local, UTC) later than the instant `after`, or None within the search's reach.

    dateutil walks period by period from DTSTART and, while no period matches, stops only at year 9999: that is
    seconds for FREQ=DAILY on an impossible day. Two moves bound the walk without changing the answer, since the
    calendar repeats every 400 years and the rule's periods every INTERVAL: DTSTART moves forward by whole
    400 * INTERVAL years to within one such cycle of `after`, and the whole search moves by whole 400 years so
    that it starts 100 to 500 years before 9999, where dateutil gives up by itself.
    """
    try:
        # A day early: an occurrence in a DST gap is an hour later than its local time says.
        start = max(_local(after, zone), datetime(1, 1, 2)) - timedelta(days=1)
        cycle = _CYCLE * (rule.interval or 1)
        anchor = _add_years(anchor, max(0, (start.year - anchor.year - 1) // cycle) * cycle)
        low, high = sorted((anchor.year, start.year))
        shift = _CYCLE * max((_LAST_SEARCH_YEAR - high) // _CYCLE, -((low - 1) // _CYCLE))  # years stay in 1-9999
        for shifted in rule.rrule(_add_years(anchor, shift)).xafter(_add_years(start, shift), inc=True):
            local = _add_years(shifted, -shift)
            moment = _to_utc(local, zone)
            if moment > after:
                return local, moment
    except (OverflowError, ValueError):  # a date-time beyond year 1 or 9999: there is nothing to find there
        pass
    return None


def _parse(value: str) -> _Rule:
    if len(value) > MAX_RRULE_LENGTH:
        raise ValueError(f"recurrence must be at most {MAX_RRULE_LENGTH} characters")
    text = value.strip().upper()
    text = text.removeprefix("RRULE:").strip()
    parts: dict[str, str] = {}
    for part in text.split(";"):
        name, equals, part_value = part.partition("=")
        if not (name and equals and part_value):
            raise ValueError("recurrence must be NAME=VALUE parts separated by ';', such as FREQ=WEEKLY;BYDAY=MO")
        if name in _UNSUPPORTED:
            raise ValueError(f"{name} is not supported; {_UNSUPPORTED[name]}")
        if name not in _PARTS:
            raise ValueError(f"unknown recurrence part {name[:40]!r}; the parts are {', '.join(_PARTS)}")
        if name in parts:
            raise ValueError(f"{name} may be given only once")
        parts[name] = part_value
    if parts.get("FREQ") not in _FREQS:
        raise ValueError(f"FREQ must be one of {', '.join(_FREQS)}")
    rule = _Rule(
        freq=parts["FREQ"],
        interval=_positive("INTERVAL", parts["INTERVAL"], MAX_INTERVAL) if "INTERVAL" in parts else None,
        count=_positive("COUNT", parts["COUNT"]) if "COUNT" in parts else None,
        until=_until(parts["UNTIL"]) if "UNTIL" in parts else None,
        bymonth=_numbers("BYMONTH", parts.get("BYMONTH"), 12, signed=False),
        bymonthday=_numbers("BYMONTHDAY", parts.get("BYMONTHDAY"), 31, signed=True),
        byday=_byday(parts.get("BYDAY")),
        bysetpos=_numbers("BYSETPOS", parts.get("BYSETPOS"), 366, signed=True),
        wkst=_weekday("WKST", parts["WKST"]) if "WKST" in parts else None,
    )
    _check_together(rule)
    return rule


def _check_together(rule: _Rule) -> None:
    """The RFC 5545 rules between parts, and combinations that can never occur."""
    if rule.count is not None and rule.until is not None:
        raise ValueError("COUNT and UNTIL cannot both be given")
    if rule.bymonthday and rule.freq == "WEEKLY":
        raise ValueError("BYMONTHDAY cannot be used with FREQ=WEEKLY")
    months = rule.bymonth or range(1, 13)
    if rule.bymonthday and not any(abs(day) <= _MONTH_DAYS[m - 1] for m in months for day in rule.bymonthday):
        raise ValueError("BYMONTHDAY never falls in the months of BYMONTH")
    ordinals = [abs(n) for _, n in rule.byday if n]
    if ordinals and rule.freq not in ("MONTHLY", "YEARLY"):
        raise ValueError("BYDAY with a number (1MO, -1FR) needs FREQ=MONTHLY or FREQ=YEARLY")
    if ordinals and max(ordinals) > 5 and (rule.freq == "MONTHLY" or rule.bymonth):
        raise ValueError("BYDAY numbers within a month run from 1 to 5 (or -5 to -1)")
    if rule.bysetpos and rule.freq == "DAILY":
        raise ValueError("BYSETPOS needs FREQ=WEEKLY, MONTHLY or YEARLY")
    if rule.bysetpos and not (rule.byday or rule.bymonthday or rule.bymonth):
        raise ValueError("BYSETPOS needs BYDAY, BYMONTHDAY or BYMONTH")


def _positive(name: str, value: str, limit: int | None = None) -> int:
    number = int(value) if value.isascii() and value.isdigit() else 0
    if number < 1 or (limit is not None and number > limit):
        raise ValueError(f"{name} must be a positive integer" + (f" up to {limit}" if limit else ""))
    return number


def _numbers(name: str, value: str | None, limit: int, *, signed: bool) -> tuple[int, ...]:
    numbers: set[int] = set()
    for item in value.split(",") if value is not None else ():
        number = int(item) if _INTEGER.fullmatch(item) else 0
        if not 1 <= abs(number) <= limit or (number < 0 and not signed):
            span = f"1 to {limit}" + (f" or -{limit} to -1" if signed else "")
            raise ValueError(f"{name} must be a comma-separated list of numbers from {span}")
        numbers.add(number)
    return tuple(sorted(numbers))


def _byday(value: str | None) -> tuple[tuple[int, int], ...]:
    days: set[tuple[int, int]] = set()
    for item in value.split(",") if value is not None else ():
        match = _BYDAY.fullmatch(item)
        n = int(match[1]) if match and match[1] else 0
        if not match or (match[1] and not 1 <= abs(n) <= 53):
            raise ValueError(
                "BYDAY must be a comma-separated list of MO, TU, WE, TH, FR, SA, SU, each perhaps "
                "numbered from 1 to 53 or -53 to -1 (1MO: the first Monday, -1FR: the last Friday)"
            )
        days.add((_DAYS.index(match[2]), n))
    return tuple(sorted(days))


def _weekday(name: str, value: str) -> int:
    if value not in _DAYS:
        raise ValueError(f"{name} must be one of {', '.join(_DAYS)}")
    return _DAYS.index(value)


def _until(value: str) -> _Until:
    match = _UNTIL.fullmatch(value)
    try:
        if match is None:
            raise ValueError
        year, month, day, hour, minute, second = (int(group or 0) for group in match.groups()[:6])
        moment = datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise ValueError("UNTIL must be a date (YYYYMMDD) or a UTC date-time (YYYYMMDDTHHMMSSZ)") from None
    kind: Literal["date", "utc", "local"] = "date" if match[4] is None else "utc" if match[7] else "local"
    return _Until(value, moment, kind)


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    # "localtime" is the system's /etc/localtime where the system's zone files are read: no IANA name.
    return frozenset(available_timezones() - {"localtime"} | {"UTC"})


def _zone(name: str) -> ZoneInfo:
    # Checked against the IANA list rather than handed to ZoneInfo, which also opens other paths.
    if name not in _zone_names():
        raise ValueError("unknown time zone; use an IANA name such as Europe/Berlin or UTC")
    return ZoneInfo(name)


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """A local wall-clock time as an instant, as RFC 5545 3.3.5 asks: zoneinfo's fold=0 reads an ambiguous time
    as its first instant and a time in a DST gap with the offset before the gap, that is moved forward by it."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _add_years(moment: datetime, years: int) -> datetime:
    return moment.replace(year=moment.year + years)  # whole 400-year cycles only: Feb 29 stays a leap day
