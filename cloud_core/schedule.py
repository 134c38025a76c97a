"""When rounds open: a cron expression in the fleet's time zone (croniter does the parsing), or a
fixed interval for simulations. Pure: times in, times out.

Daylight-saving changes, for a nightly "0 2 * * *": on the spring-forward night 02:00 does not
exist and the round opens at 03:00 local (croniter's choice, kept: the night still gets its
round); on the fall-back night 02:00 happens twice and the round opens at the first one only —
croniter would fire at both, which would run two rounds in one night.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter


class ScheduleError(ValueError):
    """A cron expression or time zone that cannot be used."""


def check_cron(expression: str) -> str:
    if not croniter.is_valid(expression):
        raise ScheduleError(f"not a valid cron expression: {expression!r} (five fields, e.g. '0 2 * * *')")
    return expression


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {name!r} (an IANA name such as 'Europe/Berlin')") from exc


def _is_repeated_wall_time(moment: datetime, tz: ZoneInfo) -> bool:
    """`moment` is the second occurrence of a wall-clock time that happens twice (fall back)."""
    wall = moment.astimezone(tz).replace(tzinfo=None)
    first, second = wall.replace(tzinfo=tz, fold=0), wall.replace(tzinfo=tz, fold=1)
    return first.utcoffset() != second.utcoffset() and moment.utcoffset() == second.utcoffset()


def next_cron_time(after: datetime, expression: str, tz: ZoneInfo) -> datetime:
    """The first time strictly after `after` (aware) at which `expression` fires in `tz`, in UTC."""
    times = croniter(check_cron(expression), after.astimezone(tz))
    while True:
        candidate: datetime = times.get_next(datetime)
        if not _is_repeated_wall_time(candidate, tz):
            return candidate.astimezone(UTC)


def next_round_time(
    after: float, *, cron: str | None, timezone: str, interval_s: float | None, last_opened: float | None
) -> float:
    """When the next round opens (Unix seconds), given the current time `after` and when the last
    one opened. With an interval: one interval after the last round, or at once if there was
    none. With cron: the next firing after both `after` and the last round; a firing missed while
    the cloud core was down is not caught up (`nacelle cloud --once` runs one now)."""
    if interval_s is not None:
        return after if last_opened is None else max(after, last_opened + interval_s)
    if cron is None:
        raise ScheduleError("a schedule needs a cron expression or an interval")
    since = max(after, last_opened or after)
    return next_cron_time(datetime.fromtimestamp(since, UTC), cron, zone(timezone)).timestamp()


def upcoming(start: datetime, expression: str, tz: ZoneInfo, count: int) -> list[datetime]:
    """The next `count` round times after `start` (for `nacelle cloud --show-schedule` and tests)."""
    times, moment = [], start
    for _ in range(count):
        moment = next_cron_time(moment, expression, tz)
        times.append(moment)
    return times
