"""`rfc3339`'s isoformat path writes exactly what its strftime formulation writes, for any moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from apiplus.envelope import rfc3339


def by_strftime(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


ZONES = [UTC, timezone(timedelta(hours=-3)), timezone(timedelta(hours=5, minutes=30))]
# hypothesis takes naive bounds and attaches the zones itself
EARLIEST, LATEST = datetime(1, 1, 2), datetime(9999, 12, 30)  # noqa: DTZ001


@given(st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=st.sampled_from(ZONES)))
def test_rfc3339_matches_strftime(moment: datetime) -> None:
    assert rfc3339(moment) == by_strftime(moment)


def test_rfc3339_milliseconds_only_when_there_are_any() -> None:
    assert rfc3339(datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)) == "2026-11-28T01:02:03Z"
    assert rfc3339(datetime(2026, 11, 28, 1, 2, 3, 999, tzinfo=UTC)) == "2026-11-28T01:02:03.000Z"
    assert rfc3339(datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=UTC)) == "2026-11-28T01:02:03.456Z"
    assert rfc3339(datetime(999, 1, 1, tzinfo=UTC)) == by_strftime(datetime(999, 1, 1, tzinfo=UTC))
