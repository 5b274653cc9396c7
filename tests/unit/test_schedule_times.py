"""When a schedule's slots fall: cron across DST in two zones, month ends, steps and ranges; every anchored;
what a tick fires under each missed policy."""
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from greenjobs.pool.schedules import Schedule


def at(text, zone="UTC"):
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def walk(schedule, start, n):
    out, t = [], start
    for _ in range(n):
        t = schedule.next_after(t)
        out.append(datetime.fromtimestamp(t, ZoneInfo(schedule.timezone)).isoformat())
    return out


def cron(expr, zone="UTC", **kw):
    return Schedule(name="s", job={"handler": "echo"}, cron=expr, timezone=zone, **kw)


@pytest.mark.parametrize("zone,day,offsets", [
    ("America/New_York", "2026-03-08", ("-05:00", "-04:00")),
    ("Europe/Berlin", "2026-03-29", ("+01:00", "+02:00")),
])
def test_a_fixed_time_in_the_skipped_spring_hour_runs_once_just_after_it(zone, day, offsets):
    slots = walk(cron("30 2 * * *", zone), at(f"{day}T00:00:00", zone) - 86400, 3)
    previous, _ = day.rsplit("-", 1)
    assert slots[1] == f"{day}T03:00:00{offsets[1]}"            # 02:30 does not exist: 03:00, once
    assert slots[0].endswith(f"T02:30:00{offsets[0]}") and slots[2].endswith(f"T02:30:00{offsets[1]}")


@pytest.mark.parametrize("zone,day,first,second", [
    ("America/New_York", "2026-11-01", "-04:00", "-05:00"),
    ("Europe/Berlin", "2026-10-25", "+02:00", "+01:00"),
])
def test_a_fixed_time_in_the_repeated_autumn_hour_runs_once(zone, day, first, second):
    hour = "1" if zone.startswith("America") else "2"
    slots = walk(cron(f"30 {hour} * * *", zone), at(f"{day}T00:00:00", zone), 2)
    assert slots[0] == f"{day}T0{hour}:30:00{first}"            # its first occurrence only
    assert slots[1].endswith(f"T0{hour}:30:00{second}") and not slots[1].startswith(day)


def test_steps_keep_real_time_through_the_autumn_change():
    s = cron("*/30 * * * *", "America/New_York")
    start = at("2026-11-01T00:50:00", "America/New_York")
    times = [s.next_after(start)]
    for _ in range(4):
        times.append(s.next_after(times[-1]))
    assert [b - a for a, b in zip(times, times[1:])] == [1800.0] * 4


def test_month_ends_ranges_and_steps():
    assert walk(cron("0 0 31 * *"), at("2027-01-15T00:00:00"), 3) == [
        "2027-01-31T00:00:00+00:00", "2027-03-31T00:00:00+00:00", "2027-05-31T00:00:00+00:00"]
    assert walk(cron("0 12 L * *"), at("2028-02-01T00:00:00"), 1) == ["2028-02-29T12:00:00+00:00"]
    assert walk(cron("15-17 9 * * MON-FRI"), at("2026-12-04T09:16:30"), 3) == [
        "2026-12-04T09:17:00+00:00", "2026-12-07T09:15:00+00:00", "2026-12-07T09:16:00+00:00"]
    assert walk(cron("*/20 * * * *"), at("2026-12-01T10:05:00"), 3) == [
        "2026-12-01T10:20:00+00:00", "2026-12-01T10:40:00+00:00", "2026-12-01T11:00:00+00:00"]


def test_every_is_anchored_at_start_at_or_the_epoch_and_bounded_by_end_at():
    s = Schedule(name="e", job={}, every=60.0)
    assert s.next_after(at("2026-12-01T10:00:30")) == at("2026-12-01T10:01:00")
    anchored = Schedule(name="e", job={}, every=60.0, start_at=at("2026-12-01T10:00:15"),
                        end_at=at("2026-12-01T10:02:15"))
    assert anchored.next_after(0.0) == at("2026-12-01T10:00:15")           # start_at is the first slot
    assert anchored.next_after(at("2026-12-01T10:01:20")) == at("2026-12-01T10:02:15")
    assert anchored.next_after(at("2026-12-01T10:02:15")) is None            # past end_at: no more slots
    assert anchored.prev_before(at("2026-12-01T10:00:15")) is None


@pytest.mark.parametrize("missed,fired", [
    ("skip", [995.0, 1000.0]),                       # only the slots within the grace window
    ("once", [990.0, 995.0, 1000.0]),                # plus the newest missed one
    ("all", [980.0, 985.0, 990.0, 995.0, 1000.0]),   # plus the newest max_backfill (3) missed ones
])
def test_a_tick_fires_by_the_missed_policy(missed, fired):
    s = Schedule(name="e", job={}, every=5.0, missed=missed, next_fire_at=900.0)
    plan = s.plan(1000.3, grace=10.0, max_backfill=3)
    assert plan.fire == fired and plan.next_fire_at == 1005.0 and plan.missed


def test_nothing_is_due_before_the_cursor_and_a_slow_tick_does_not_drift():
    s = Schedule(name="e", job={}, every=5.0, next_fire_at=1005.0)
    assert s.plan(1004.9, grace=10.0, max_backfill=3) is None
    late = s.plan(1008.7, grace=10.0, max_backfill=3)           # a tick 3.7 s late fires the slot, on its time
    assert late.fire == [1005.0] and late.next_fire_at == 1010.0 and not late.missed
