"""Durations, timestamps and dates: the value syntaxes the config accepts, and what it refuses."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from crmctl.config import format_duration, parse_duration, parse_timestamp
from crmctl.config.values import parse_date


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5s", timedelta(seconds=1.5)),
        ("0s", timedelta(0)),
        ("45", timedelta(seconds=45)),
        (45, timedelta(seconds=45)),
        (0.5, timedelta(milliseconds=500)),
    ],
)
def test_parse_duration(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "-5m", "5 minutes", "1y", "m", "30S", True, None, [1], float("nan"), -1])
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=30), "30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=1), "1d"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(seconds=1, milliseconds=500), "1s500ms"),
    ],
)
def test_format_duration_round_trips(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text
    assert parse_duration(text) == delta


def test_parse_timestamp() -> None:
    utc = datetime(2026, 11, 28, 23, 0, tzinfo=timezone.utc)
    assert parse_timestamp("2026-11-28T23:00:00Z") == utc
    assert parse_timestamp("2026-11-29T00:00:00+01:00") == utc
    assert parse_timestamp(datetime(2026, 11, 29, 0, 0, tzinfo=timezone(timedelta(hours=1)))) == utc
    assert parse_timestamp("2026-11-29T00:00:00+01:00").tzinfo is timezone.utc


@pytest.mark.parametrize("value", ["2026-11-28T23:00:00", datetime(2026, 11, 28, 23, 0), date(2026, 11, 28)])
def test_naive_timestamps_need_a_timezone(value: object) -> None:
    with pytest.raises(ValueError, match="timezone required"):
        parse_timestamp(value)


@pytest.mark.parametrize("value", ["tomorrow", "", 1700000000, None])
def test_parse_timestamp_refuses(value: object) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(value)


def test_parse_date() -> None:
    assert parse_date(date(2026, 11, 28)) == date(2026, 11, 28)
    assert parse_date("2026-11-28") == date(2026, 11, 28)
    for bad in ("28/11/2026", datetime(2026, 11, 28, tzinfo=timezone.utc), 20261128):
        with pytest.raises(ValueError):
            parse_date(bad)
