"""Retention (storage.engine.prune): table tests of the policy and hypothesis properties.

Pure functions only: no database, no Django.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.engine.prune import (
    Decision,
    Mark,
    PointInfo,
    RetentionPolicy,
    compute_prune,
    preview,
)

NOW = datetime(2027, 1, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    """An ISO time; UTC unless it names an offset."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def pt(point_id: str, when: str, **kwargs: Any) -> PointInfo:
    return PointInfo(id=point_id, time=at(when), **kwargs)


def daily(first: str, count: int, hour: int = 12) -> list[PointInfo]:
    """One point a day at ``hour`` UTC, id = the date."""
    start = date.fromisoformat(first)
    days = [start + timedelta(days=i) for i in range(count)]
    return [pt(d.isoformat(), f"{d.isoformat()}T{hour:02d}:00:00") for d in days]


def survivors(decisions: Iterable[Decision]) -> set[str]:
    return {d.point.id for d in decisions if d.mark is not Mark.REMOVE}


def by_id(decisions: Iterable[Decision]) -> dict[str, Decision]:
    return {d.point.id: d for d in decisions}


# --------------------------------------------------------------------------- table tests

TOKYO_POINTS = [
    pt("a", "2026-11-23T23:30:00"),  # Tokyo 2026-11-24 08:30, New York 2026-11-23 18:30
    pt("b", "2026-11-24T00:30:00"),  # Tokyo 2026-11-24 09:30, New York 2026-11-23 19:30
    pt("c", "2026-11-22T12:00:00"),  # Tokyo 2026-11-22 21:00, New York 2026-11-22 07:00
]

ISO_BOUNDARY = [
    pt("2020-12-27", "2020-12-27T12:00:00"),  # Sunday, 2020-W52
    pt("2020-12-31", "2020-12-31T12:00:00"),  # Thursday, 2020-W53
    pt("2021-01-01", "2021-01-01T12:00:00"),  # Friday, still 2020-W53
    pt("2021-01-04", "2021-01-04T12:00:00"),  # Monday, 2021-W01
]

SEVERAL_A_DAY = [
    pt("d1-08", "2026-03-01T08:00:00"),
    pt("d1-12", "2026-03-01T12:00:00"),
    pt("d1-20", "2026-03-01T20:00:00"),
    pt("d2-09", "2026-03-02T09:00:00"),
    pt("d2-23", "2026-03-02T23:59:59"),
    pt("d3-00", "2026-03-03T00:00:00"),
]

MONTHS = [
    pt("01-15", "2026-01-15T12:00:00"),
    pt("01-31", "2026-01-31T12:00:00"),
    pt("02-10", "2026-02-10T12:00:00"),
    pt("02-28", "2026-02-28T12:00:00"),
    pt("03-01", "2026-03-01T12:00:00"),
    pt("04-30", "2026-04-30T12:00:00"),
]

YEARS = [
    pt("2020-06", "2020-06-01T12:00:00"),
    pt("2023-06", "2023-06-01T12:00:00"),
    pt("2023-12", "2023-12-31T12:00:00"),
    pt("2024-01", "2024-01-01T12:00:00"),
    pt("2025-07", "2025-07-01T12:00:00"),
    pt("2025-12", "2025-12-31T23:00:00"),
]

# 200 daily points, 2026-05-09 .. 2026-11-24 (a Tuesday, ISO 2026-W48).
TWO_HUNDRED = daily("2026-05-09", 200)
# 800 daily points, 2024-09-16 .. 2026-11-24.
EIGHT_HUNDRED = daily("2024-09-16", 800)

GFS_EXPECTED = {
    # last 2: 11-24, 11-23; daily 7: 11-18 .. 11-24
    "2026-11-18", "2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23",
    "2026-11-24",
    # weekly 4: W48 -> 11-24, W47 -> Sun 11-22 (already daily, still counts), W46, W45
    "2026-11-15", "2026-11-08",
    # monthly 6: 11 -> 11-24, then the last day of Oct, Sep, Aug, Jul, Jun
    "2026-10-31", "2026-09-30", "2026-08-31", "2026-07-31", "2026-06-30",
}  # fmt: skip

TABLE = [
    pytest.param(
        [pt(f"p{i}", f"2026-11-24T{i:02d}:00:00") for i in range(5)],
        RetentionPolicy(keep_last=3),
        {"p4", "p3", "p2"},
        id="keep-last-alone",
    ),
    pytest.param(
        [pt(f"p{i}", f"2026-11-2{i}T12:00:00") for i in range(3)],
        RetentionPolicy(keep_last=10),
        {"p0", "p1", "p2"},
        id="keep-last-more-than-points",
    ),
    pytest.param(
        [pt("a", "2026-11-24T12:00:00"), pt("b", "2026-11-24T12:00:00"), pt("c", "2026-11-23")],
        RetentionPolicy(keep_last=1),
        {"b"},
        id="keep-last-tie-broken-by-id",
    ),
    pytest.param(SEVERAL_A_DAY, RetentionPolicy(keep_daily=1), {"d3-00"}, id="daily-1"),
    pytest.param(
        SEVERAL_A_DAY, RetentionPolicy(keep_daily=2), {"d3-00", "d2-23"}, id="daily-several-a-day"
    ),
    pytest.param(
        SEVERAL_A_DAY,
        RetentionPolicy(keep_daily=5),
        {"d3-00", "d2-23", "d1-20"},
        id="daily-more-days-than-exist",
    ),
    pytest.param(
        daily("2026-11-01", 3) + daily("2026-11-20", 2),
        RetentionPolicy(keep_daily=3),
        {"2026-11-21", "2026-11-20", "2026-11-03"},
        id="daily-days-without-points-do-not-count",
    ),
    pytest.param(
        ISO_BOUNDARY,
        RetentionPolicy(keep_weekly=2),
        {"2021-01-04", "2021-01-01"},
        id="weekly-iso-year-boundary",
    ),
    pytest.param(
        ISO_BOUNDARY,
        RetentionPolicy(keep_weekly=3),
        {"2021-01-04", "2021-01-01", "2020-12-27"},
        id="weekly-iso-year-boundary-3",
    ),
    pytest.param(
        ISO_BOUNDARY,
        RetentionPolicy(keep_yearly=2),
        {"2021-01-04", "2020-12-31"},
        id="yearly-is-calendar-not-iso",
    ),
    pytest.param(
        [pt("sun", "2024-12-29T12:00:00"), pt("mon", "2024-12-30T12:00:00")],
        RetentionPolicy(keep_weekly=1),
        {"mon"},
        id="weekly-2024-12-30-is-2025-W01",
    ),
    pytest.param(
        MONTHS, RetentionPolicy(keep_monthly=3), {"04-30", "03-01", "02-28"}, id="monthly"
    ),
    pytest.param(
        MONTHS,
        RetentionPolicy(keep_monthly=12),
        {"04-30", "03-01", "02-28", "01-31"},
        id="monthly-months-without-points-do-not-count",
    ),
    pytest.param(YEARS, RetentionPolicy(keep_yearly=2), {"2025-12", "2024-01"}, id="yearly"),
    pytest.param(
        YEARS,
        RetentionPolicy(keep_yearly=3),
        {"2025-12", "2024-01", "2023-12"},
        id="yearly-years-without-points-do-not-count",
    ),
    pytest.param(
        YEARS,
        RetentionPolicy(keep_yearly=2, timezone="Asia/Tokyo"),
        {"2025-12", "2025-07"},  # 2025-12-31 23:00 UTC is 2026-01-01 in Tokyo: 2026 and 2025
        id="yearly-in-tokyo",
    ),
    pytest.param(
        TWO_HUNDRED,
        RetentionPolicy(keep_last=2, keep_daily=7, keep_weekly=4, keep_monthly=6),
        GFS_EXPECTED,
        id="gfs-200-daily-points",
    ),
    pytest.param(
        EIGHT_HUNDRED,
        RetentionPolicy(keep_last=2, keep_daily=7, keep_weekly=4, keep_monthly=6, keep_yearly=3),
        GFS_EXPECTED | {"2025-12-31", "2024-12-31"},
        id="gfs-800-daily-points-with-yearly",
    ),
    pytest.param(TOKYO_POINTS, RetentionPolicy(keep_daily=2), {"b", "a"}, id="tz-utc-two-days"),
    pytest.param(
        TOKYO_POINTS,
        RetentionPolicy(keep_daily=2, timezone="Asia/Tokyo"),
        {"b", "c"},
        id="tz-tokyo-one-day",
    ),
    pytest.param(
        TOKYO_POINTS,
        RetentionPolicy(keep_daily=2, timezone="America/New_York"),
        {"b", "c"},
        id="tz-new-york-one-day",
    ),
    pytest.param(
        [
            pt("old-protected", "2020-01-01T00:00:00", protected=True),
            *[pt(f"p{i}", f"2026-11-24T{i:02d}:00:00") for i in range(4)],
        ],
        RetentionPolicy(keep_last=2),
        {"old-protected", "p3", "p2"},
        id="protected-kept-outside-policy",
    ),
    pytest.param(
        [
            pt("p0", "2026-11-24T00:00:00"),
            pt("p1", "2026-11-24T01:00:00"),
            pt("p2", "2026-11-24T02:00:00"),
            pt("p3", "2026-11-24T03:00:00", protected=True),
        ],
        RetentionPolicy(keep_last=2),
        {"p3", "p2", "p1"},
        id="protected-takes-no-keep-last-slot",
    ),
    pytest.param(
        [
            pt("d1-10", "2026-11-23T10:00:00"),
            pt("d2-10", "2026-11-24T10:00:00"),
            pt("d2-20", "2026-11-24T20:00:00", protected=True),
        ],
        RetentionPolicy(keep_daily=1),
        {"d2-20", "d2-10"},
        id="protected-does-not-stand-for-its-day",
    ),
    pytest.param(
        [
            pt("p0", "2026-11-20T00:00:00", immutable_until=NOW + timedelta(days=1)),
            pt("p1", "2026-11-21T00:00:00", immutable_until=NOW),  # expired exactly now
            pt("p2", "2026-11-22T00:00:00", immutable_until=NOW - timedelta(days=1)),
            pt("p3", "2026-11-23T00:00:00"),
        ],
        RetentionPolicy(keep_last=1),
        {"p3", "p0"},
        id="immutable-never-removed",
    ),
    pytest.param(
        [
            pt("p0", "2026-11-20T00:00:00", in_use=True),
            pt("p1", "2026-11-21T00:00:00"),
            pt("p2", "2026-11-22T00:00:00"),
        ],
        RetentionPolicy(keep_last=1),
        {"p2", "p0"},
        id="in-use-never-removed",
    ),
    pytest.param(
        [
            pt("p0", "2026-11-22T00:00:00"),
            pt("p1", "2026-11-23T00:00:00"),
            pt("p2", "2026-11-24T00:00:00", in_use=True),
        ],
        RetentionPolicy(keep_last=1),
        {"p2"},
        id="in-use-takes-a-slot",
    ),
]


@pytest.mark.parametrize(("points", "policy", "expected"), TABLE)
def test_table(points: list[PointInfo], policy: RetentionPolicy, expected: set[str]) -> None:
    decisions = compute_prune(points, policy, now=NOW)
    assert survivors(decisions) == expected
    assert [d.point.id for d in decisions if d.mark is Mark.REMOVE] == [
        p.id for p in sorted(points, key=lambda p: (p.time, p.id), reverse=True)
        if p.id not in expected
    ]  # fmt: skip


# --------------------------------------------------------------------------- marks and reasons


def test_gfs_reasons_list_every_rule() -> None:
    decisions = by_id(
        compute_prune(
            TWO_HUNDRED,
            RetentionPolicy(keep_last=2, keep_daily=7, keep_weekly=4, keep_monthly=6),
            now=NOW,
        )
    )
    assert decisions["2026-11-24"].reasons == (
        "last 1",
        "daily 2026-11-24",
        "weekly 2026-W48",
        "monthly 2026-11",
    )
    assert decisions["2026-11-23"].reasons == ("last 2", "daily 2026-11-23")
    assert decisions["2026-11-22"].reasons == ("daily 2026-11-22", "weekly 2026-W47")
    assert decisions["2026-11-18"].reasons == ("daily 2026-11-18",)
    assert decisions["2026-11-08"].reasons == ("weekly 2026-W45",)
    assert decisions["2026-06-30"].reasons == ("monthly 2026-06",)
    assert decisions["2026-11-17"].reasons == ()
    assert decisions["2026-11-17"].mark is Mark.REMOVE
    assert all(d.mark is Mark.KEEP for k, d in decisions.items() if k in GFS_EXPECTED)


def test_one_point_kept_by_all_rules() -> None:
    policy = RetentionPolicy(
        keep_last=1, keep_daily=1, keep_weekly=1, keep_monthly=1, keep_yearly=1
    )
    [decision] = compute_prune([pt("only", "2026-11-24T10:00:00")], policy, now=NOW)
    assert decision.mark is Mark.KEEP
    assert decision.reasons == (
        "last 1",
        "daily 2026-11-24",
        "weekly 2026-W48",
        "monthly 2026-11",
        "yearly 2026",
    )


def test_iso_week_reason_across_year_boundary() -> None:
    decisions = by_id(compute_prune(ISO_BOUNDARY, RetentionPolicy(keep_weekly=3), now=NOW))
    assert decisions["2021-01-04"].reasons == ("weekly 2021-W01",)
    assert decisions["2021-01-01"].reasons == ("weekly 2020-W53",)
    assert decisions["2020-12-31"].mark is Mark.REMOVE
    assert decisions["2020-12-27"].reasons == ("weekly 2020-W52",)


@pytest.mark.parametrize(
    ("zone", "label"),
    [("UTC", "2026-11-23"), ("Asia/Tokyo", "2026-11-24"), ("America/Los_Angeles", "2026-11-23")],
)
def test_day_is_computed_in_the_policy_zone(zone: str, label: str) -> None:
    point = pt("late", "2026-11-23T23:30:00")
    [decision] = compute_prune([point], RetentionPolicy(keep_daily=1, timezone=zone), now=NOW)
    assert decision.reasons == (f"daily {label}",)


def test_point_time_zone_does_not_matter_only_the_instant() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    as_utc = [pt("a", "2026-11-23T23:30:00"), pt("b", "2026-11-24T00:30:00")]
    as_tokyo = [PointInfo(id=p.id, time=p.time.astimezone(tokyo)) for p in as_utc]
    policy = RetentionPolicy(keep_daily=2)
    first = [(d.point.id, d.mark, d.reasons) for d in compute_prune(as_utc, policy, now=NOW)]
    second = [(d.point.id, d.mark, d.reasons) for d in compute_prune(as_tokyo, policy, now=NOW)]
    assert first == second
    assert first == [
        ("b", Mark.KEEP, ("daily 2026-11-24",)),
        ("a", Mark.KEEP, ("daily 2026-11-23",)),
    ]


def test_protected_mark_and_slots() -> None:
    points = [
        pt("p0", "2026-11-24T00:00:00"),
        pt("p1", "2026-11-24T01:00:00"),
        pt("p2", "2026-11-24T02:00:00"),
        pt("p3", "2026-11-24T03:00:00", protected=True),
    ]
    decisions = compute_prune(points, RetentionPolicy(keep_last=2), now=NOW)
    assert [(d.point.id, d.mark, d.reasons) for d in decisions] == [
        ("p3", Mark.PROTECTED, ("protected",)),
        ("p2", Mark.KEEP, ("last 1",)),
        ("p1", Mark.KEEP, ("last 2",)),
        ("p0", Mark.REMOVE, ()),
    ]


def test_immutable_marks() -> None:
    until = NOW + timedelta(days=30)
    points = [
        pt("old", "2026-11-20T00:00:00", immutable_until=until),
        pt("expired", "2026-11-21T00:00:00", immutable_until=NOW),
        pt("new", "2026-11-24T00:00:00", immutable_until=until),
        pt("newer", "2026-11-24T06:00:00"),
    ]
    decisions = compute_prune(points, RetentionPolicy(keep_last=2), now=NOW)
    assert [(d.point.id, d.mark, d.reasons) for d in decisions] == [
        ("newer", Mark.KEEP, ("last 1",)),
        ("new", Mark.KEEP, ("last 2", "immutable until 2027-01-31T00:00:00+00:00")),
        ("expired", Mark.REMOVE, ()),
        ("old", Mark.IMMUTABLE, ("immutable until 2027-01-31T00:00:00+00:00",)),
    ]


def test_immutable_takes_part_in_the_rules() -> None:
    # The immutable newest point uses the only keep_last slot; the next one goes.
    points = [
        pt("p0", "2026-11-23T00:00:00"),
        pt("p1", "2026-11-24T00:00:00", immutable_until=NOW + timedelta(days=1)),
    ]
    decisions = by_id(compute_prune(points, RetentionPolicy(keep_last=1), now=NOW))
    assert decisions["p1"].mark is Mark.KEEP
    assert decisions["p0"].mark is Mark.REMOVE


def test_in_use_marks() -> None:
    points = [
        pt("parent", "2026-11-20T00:00:00", in_use=True),
        pt("both", "2026-11-21T00:00:00", in_use=True, immutable_until=NOW + timedelta(hours=1)),
        pt("gone", "2026-11-22T00:00:00"),
        pt("read", "2026-11-24T00:00:00", in_use=True),
        pt("all", "2026-01-01T00:00:00", in_use=True, protected=True, immutable_until=NOW),
    ]
    decisions = compute_prune(points, RetentionPolicy(keep_last=1), now=NOW)
    assert [(d.point.id, d.mark, d.reasons) for d in decisions] == [
        ("read", Mark.KEEP, ("last 1", "in use")),
        ("gone", Mark.REMOVE, ()),
        ("both", Mark.IMMUTABLE, ("immutable until 2027-01-01T01:00:00+00:00", "in use")),
        ("parent", Mark.IN_USE, ("in use",)),
        ("all", Mark.PROTECTED, ("protected", "in use")),  # immutability expired exactly now
    ]


def test_output_newest_first_ties_by_id_whatever_the_input_order() -> None:
    points = [
        pt("b", "2026-11-24T12:00:00"),
        pt("a", "2026-11-24T12:00:00"),
        pt("z", "2026-11-20T00:00:00"),
        pt("c", "2026-11-24T12:00:00"),
        pt("y", "2026-11-25T00:00:00"),
    ]
    expected = ["y", "c", "b", "a", "z"]
    for seed in range(5):
        shuffled = points[:]
        random.Random(seed).shuffle(shuffled)
        decisions = compute_prune(shuffled, RetentionPolicy(keep_last=2), now=NOW)
        assert [d.point.id for d in decisions] == expected
        assert survivors(decisions) == {"y", "c"}


def test_accepts_any_iterable_and_empty_input() -> None:
    assert compute_prune(iter([]), RetentionPolicy(keep_last=1), now=NOW) == []
    gen = (p for p in daily("2026-11-01", 3))
    assert survivors(compute_prune(gen, RetentionPolicy(keep_last=1), now=NOW)) == {"2026-11-03"}


def test_preview() -> None:
    points = [
        pt("p0", "2026-11-20T00:00:00"),
        pt("p1", "2026-11-21T00:00:00"),
        pt("p2", "2026-11-22T00:00:00", in_use=True),
        pt("p3", "2026-11-23T00:00:00", protected=True),
        pt("p4", "2026-11-24T00:00:00"),
        pt("p5", "2026-11-25T00:00:00"),
    ]
    summary = preview(compute_prune(points, RetentionPolicy(keep_last=1), now=NOW))
    assert summary == {
        "total": 6,
        "counts": {"keep": 1, "remove": 3, "protected": 1, "immutable": 0, "in-use": 1},
        "remove": ["p4", "p1", "p0"],
    }
    assert preview([]) == {
        "total": 0,
        "counts": {"keep": 0, "remove": 0, "protected": 0, "immutable": 0, "in-use": 0},
        "remove": [],
    }


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "points",
    [[], daily("2026-11-01", 3), [pt("p", "2026-11-01T00:00:00", protected=True)]],
)
def test_all_zero_policy_raises(points: list[PointInfo]) -> None:
    with pytest.raises(ValueError, match=r"^retention keeps nothing$"):
        compute_prune(points, RetentionPolicy(), now=NOW)


@pytest.mark.parametrize(
    "field", ["keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"]
)
def test_negative_count_raises(field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must not be negative"):
        kwargs: dict[str, Any] = {field: -1}
        RetentionPolicy(**kwargs)


@pytest.mark.parametrize("value", [True, 1.5, "3", None])
def test_non_integer_count_raises(value: Any) -> None:
    with pytest.raises(ValueError, match="keep_daily must be a whole number"):
        RetentionPolicy(keep_daily=value)


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "", "utc ", "../../etc/passwd", "/etc/localtime", "Europe"]
)
def test_unknown_timezone_raises(zone: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        RetentionPolicy(keep_last=1, timezone=zone)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo", "America/Argentina/Buenos_Aires"])
def test_known_timezone_accepted(zone: str) -> None:
    assert RetentionPolicy(keep_last=1, timezone=zone).zone() == ZoneInfo(zone)


def test_naive_datetimes_raise() -> None:
    with pytest.raises(ValueError, match="aware"):
        PointInfo(id="p", time=datetime(2026, 11, 24))
    with pytest.raises(ValueError, match="aware"):
        PointInfo(id="p", time=NOW, immutable_until=datetime(2026, 11, 24))
    with pytest.raises(ValueError, match="now must be an aware"):
        compute_prune([], RetentionPolicy(keep_last=1), now=datetime(2026, 11, 24))


def test_duplicate_ids_raise() -> None:
    points = [pt("same", "2026-11-24T00:00:00"), pt("same", "2026-11-23T00:00:00")]
    with pytest.raises(ValueError, match="duplicate restore point ids: same"):
        compute_prune(points, RetentionPolicy(keep_last=1), now=NOW)


# --------------------------------------------------------------------------- properties

ZONES = [
    "UTC",
    "Asia/Tokyo",
    "America/New_York",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "America/St_Johns",
]
BASE = datetime(2019, 12, 1, tzinfo=UTC)
SPREADS = [
    timedelta(minutes=37),
    timedelta(hours=5),
    timedelta(days=1),
    timedelta(days=3, hours=7),
    timedelta(days=23),
]


@st.composite
def point_lists(draw: st.DrawFn) -> list[PointInfo]:
    ids = draw(
        st.lists(st.text("0123456789abcdef", min_size=1, max_size=3), unique=True, max_size=40)
    )
    spread = draw(st.sampled_from(SPREADS))
    points = []
    for point_id in ids:
        step = draw(st.integers(0, 300))  # few distinct steps: ties in time happen
        shown_in = ZoneInfo(draw(st.sampled_from(ZONES)))  # same instant, any offset
        until = draw(st.none() | st.integers(-2, 2).map(lambda d: NOW + timedelta(days=d)))
        points.append(
            PointInfo(
                id=point_id,
                time=(BASE + step * spread).astimezone(shown_in),
                protected=draw(st.sampled_from([False, False, False, True])),
                immutable_until=until,
                in_use=draw(st.sampled_from([False, False, False, True])),
            )
        )
    return points


policies = st.builds(
    RetentionPolicy,
    keep_last=st.integers(0, 5),
    keep_daily=st.integers(0, 8),
    keep_weekly=st.integers(0, 5),
    keep_monthly=st.integers(0, 7),
    keep_yearly=st.integers(0, 3),
    timezone=st.sampled_from(ZONES),
).filter(lambda p: not p.keeps_nothing)

property_settings = settings(max_examples=300, deadline=None)


def must_stay(p: PointInfo) -> bool:
    return p.protected or p.in_use or (p.immutable_until is not None and p.immutable_until > NOW)


def newest_first(points: Iterable[PointInfo]) -> list[PointInfo]:
    return sorted(points, key=lambda p: (p.time, p.id), reverse=True)


@property_settings
@given(point_lists(), policies)
def test_property_never_removes_protected_immutable_or_in_use(
    points: list[PointInfo], policy: RetentionPolicy
) -> None:
    for d in compute_prune(points, policy, now=NOW):
        p = d.point
        if must_stay(p):
            assert d.mark is not Mark.REMOVE, d
        if p.protected:
            assert d.mark is Mark.PROTECTED
        assert (d.mark is Mark.REMOVE) == (d.reasons == ())


@property_settings
@given(point_lists(), policies)
def test_property_keep_count_is_bounded(points: list[PointInfo], policy: RetentionPolicy) -> None:
    decisions = compute_prune(points, policy, now=NOW)
    budget = (
        policy.keep_last
        + policy.keep_daily
        + policy.keep_weekly
        + policy.keep_monthly
        + policy.keep_yearly
    )
    kept = [d for d in decisions if d.mark is Mark.KEEP]
    assert len(kept) <= budget
    exempt = sum(1 for p in points if must_stay(p))
    assert len(survivors(decisions)) <= budget + exempt
    # Each rule keeps at most its N points, each for a different period.
    for rule, count in [
        ("last", policy.keep_last),
        ("daily", policy.keep_daily),
        ("weekly", policy.keep_weekly),
        ("monthly", policy.keep_monthly),
        ("yearly", policy.keep_yearly),
    ]:
        labels = [r for d in decisions for r in d.reasons if r.startswith(f"{rule} ")]
        assert len(labels) <= count
        assert len(set(labels)) == len(labels)


@property_settings
@given(point_lists().filter(bool), policies)
def test_property_newest_point_is_kept(points: list[PointInfo], policy: RetentionPolicy) -> None:
    decisions = compute_prune(points, policy, now=NOW)
    newest = newest_first(points)[0]
    assert decisions[0].point == newest
    assert decisions[0].mark is not Mark.REMOVE
    newest_unprotected = next((p for p in newest_first(points) if not p.protected), None)
    if newest_unprotected is not None:
        assert by_id(decisions)[newest_unprotected.id].mark is Mark.KEEP


@property_settings
@given(point_lists(), policies, st.randoms(use_true_random=False))
def test_property_permutation_deterministic_and_idempotent(
    points: list[PointInfo], policy: RetentionPolicy, rnd: random.Random
) -> None:
    decisions = compute_prune(points, policy, now=NOW)
    # Every point exactly once, newest first.
    assert [d.point for d in decisions] == newest_first(points)
    assert sorted(d.point.id for d in decisions) == sorted(p.id for p in points)
    # The input order does not matter.
    shuffled = points[:]
    rnd.shuffle(shuffled)
    assert compute_prune(shuffled, policy, now=NOW) == decisions
    # Pruning the survivors again removes nothing and decides the same way.
    kept = [d.point for d in decisions if d.mark is not Mark.REMOVE]
    again = compute_prune(kept, policy, now=NOW)
    assert all(d.mark is not Mark.REMOVE for d in again)
    assert again == [d for d in decisions if d.mark is not Mark.REMOVE]
    # Also when only the points kept by a rule survive (the others were deleted another way).
    rule_kept = [d.point for d in decisions if d.mark is Mark.KEEP]
    assert all(d.mark is not Mark.REMOVE for d in compute_prune(rule_kept, policy, now=NOW))


def _period_functions(zone: ZoneInfo) -> dict[str, Callable[[datetime], str]]:
    def local(t: datetime) -> datetime:
        return t.astimezone(zone)

    return {
        "daily": lambda t: local(t).strftime("%Y-%m-%d"),
        "weekly": lambda t: "{}-W{:02d}".format(*local(t).isocalendar()[:2]),
        "monthly": lambda t: local(t).strftime("%Y-%m"),
        "yearly": lambda t: local(t).strftime("%Y"),
    }


@property_settings
@given(point_lists(), policies)
def test_property_matches_set_definition(points: list[PointInfo], policy: RetentionPolicy) -> None:
    """A point is kept by a GFS rule iff it is the newest unprotected point of its period and
    that period is one of the N periods whose newest points are the newest."""
    candidates = [p for p in points if not p.protected]
    order = {p.id: rank for rank, p in enumerate(newest_first(candidates))}
    expected: dict[str, set[str]] = {p.id: set() for p in candidates}
    for p in newest_first(candidates)[: policy.keep_last]:
        expected[p.id].add(f"last {order[p.id] + 1}")
    counts = {
        "daily": policy.keep_daily,
        "weekly": policy.keep_weekly,
        "monthly": policy.keep_monthly,
        "yearly": policy.keep_yearly,
    }
    for rule, period_of in _period_functions(ZoneInfo(policy.timezone)).items():
        newest_of: dict[str, PointInfo] = {}
        for p in candidates:
            label = period_of(p.time)
            if label not in newest_of or order[p.id] < order[newest_of[label].id]:
                newest_of[label] = p
        chosen = sorted(newest_of.items(), key=lambda item: order[item[1].id])[: counts[rule]]
        for label, p in chosen:
            expected[p.id].add(f"{rule} {label}")

    for d in compute_prune(points, policy, now=NOW):
        if d.point.protected:
            continue
        rule_reasons = {r for r in d.reasons if not r.startswith(("immutable", "in use"))}
        assert rule_reasons == expected[d.point.id]
        assert (d.mark is Mark.KEEP) == bool(expected[d.point.id])
