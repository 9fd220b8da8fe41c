"""Crontab lines: checked here without APScheduler, then turned into APScheduler 3.x
triggers without two of its sharp edges.

- `CronTrigger.from_crontab` reads the weekday field with 0 = Monday (APScheduler issue
  286), where crontab has 0 (and 7) = Sunday: "0 8 * * 1-5" would skip Monday.
- Around the end of daylight saving time a time inside the repeated hour fires twice
  (issues 1021, 1036).

`check_crontab` is pure and imports nothing heavy: the settings check every command's
schedule with it (monitor.config), and importing APScheduler would cost an idle `monitor
scan` a third of its time.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

CRONTAB_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
CRONTAB_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# (name, low, high) of the first four fields; the weekday field is crontab_weekdays'.
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12))


def check_crontab(expr: str) -> tuple[str, str, str, str, str]:
    """The five fields of a standard crontab line; ValueError naming what is wrong."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    for (name, low, high), value in zip(FIELDS, fields[:4], strict=True):
        _check_field(name, value, low, high)
    crontab_weekdays(fields[4])
    minute, hour, day, month, weekday = fields
    return minute, hour, day, month, weekday


def _check_field(name: str, field: str, low: int, high: int) -> None:
    for item in field.lower().split(","):
        part, slash, step = item.partition("/")
        if slash and not (step.isdigit() and int(step) >= 1):
            raise ValueError(f"bad step in the {name} field {field!r}")
        bounds = (low, high) if part == "*" else tuple(_number(name, p, low, high) for p in part.split("-"))
        if len(bounds) > 2 or bounds[0] > bounds[-1]:
            raise ValueError(f"bad range in the {name} field {field!r}")


def _number(name: str, text: str, low: int, high: int) -> int:
    if name == "month" and text in CRONTAB_MONTHS:
        return CRONTAB_MONTHS.index(text) + 1
    if text.isdigit() and low <= int(text) <= high:
        return int(text)
    raise ValueError(f"bad {name} {text!r} (from {low} to {high})")


def crontab_trigger(expr: str, timezone: dt.tzinfo) -> Any:
    """A standard crontab line ("0 8 * * 1-5") as a trigger; ValueError if it is not one.

    Not CronTrigger.from_crontab: in APScheduler 3.x weekday 0 is Monday, not Sunday as
    in crontab (its issue 286), so "1-5" would mean Tuesday to Saturday.
    """
    minute, hour, day, month, weekday = check_crontab(expr)
    return _trigger_class()(minute=minute, hour=hour, day=day, month=month,
                            day_of_week=crontab_weekdays(weekday), timezone=timezone)


@functools.cache
def _trigger_class() -> type:
    from apscheduler.triggers.cron import CronTrigger

    class WallClockCronTrigger(CronTrigger):
        """A cron trigger that fires once per wall-clock time.

        APScheduler 3.11 fires a time inside the hour repeated when DST ends twice (once per
        UTC offset; see its issues 1021 and 1036): a daily 02:30 digest would go out twice.
        """

        def get_next_fire_time(self, previous_fire_time: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
            fire = super().get_next_fire_time(previous_fire_time, now)
            if fire is not None and previous_fire_time is not None \
                    and fire.replace(tzinfo=None) == previous_fire_time.replace(tzinfo=None):
                # The second pass through the repeated hour: look again once it is over. (Asking
                # for "just after this fire time" returns the same time again in 3.11.)
                after = fire.astimezone(dt.UTC) + dt.timedelta(hours=1)
                fire = super().get_next_fire_time(fire, after)
            return fire

    return WallClockCronTrigger


def crontab_weekdays(field: str) -> str:
    """Crontab's weekday field (0 or 7 is Sunday, names allowed) as APScheduler day names."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for item in field.lower().split(","):
        part, _, step = item.partition("/")
        if part == "*":
            low, high = 0, 6
        elif "-" in part:
            first, _, last = part.partition("-")
            low, high = _crontab_day(first), _crontab_day(last)
        else:
            low = _crontab_day(part)
            high = 6 if step else low  # "1/2": from Monday on, every second day
        stride = int(step) if step.isdigit() else (1 if not step else 0)
        if stride < 1 or low > high:
            raise ValueError(f"bad weekday field {field!r}")
        days.update(d % 7 for d in range(low, high + 1, stride))
    return ",".join(CRONTAB_DAYS[d] for d in sorted(days))


def _crontab_day(text: str) -> int:
    if text in CRONTAB_DAYS:
        return CRONTAB_DAYS.index(text)
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    raise ValueError(f"bad weekday {text!r}")
