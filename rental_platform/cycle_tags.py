"""A cycle (`cycle.py`) as its runs' tags carry it: its mode, its as-of day, the days it
compares and the days it extracts whatever their fingerprints say.

Free of Dagster: the command line reads a cycle's days from here to start the local Spark JVM
before it imports Dagster (`cli.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

AS_OF_TAG = "rental/as_of"
MODE_TAG = "rental/mode"
COMPARE_FROM_TAG = "rental/compare_from"
EXTRACT_FROM_TAG = "rental/extract_from"


class Mode(StrEnum):
    NIGHTLY = "nightly"
    AUDIT = "audit"
    RANGE = "range"


@dataclass(frozen=True)
class Cycle:
    """One run of the cycle: stamped `as_of`; compares the source with the lake from
    `compare_from` to `as_of`, and extracts every day from `extract_from` to `as_of`."""

    mode: Mode
    as_of: date
    compare_from: date
    extract_from: date

    @classmethod
    def nightly(cls, as_of: date, mutable_days: int, first_day: date) -> Cycle:
        return cls(Mode.NIGHTLY, as_of, max(first_day, as_of - timedelta(mutable_days)), as_of)

    @classmethod
    def audit(cls, as_of: date, first_day: date) -> Cycle:
        return cls(Mode.AUDIT, as_of, first_day, as_of)

    @classmethod
    def range(cls, start: date, end: date) -> Cycle:
        return cls(Mode.RANGE, end, start, start)

    def tags(self) -> dict[str, str]:
        return {
            MODE_TAG: str(self.mode),
            AS_OF_TAG: self.as_of.isoformat(),
            COMPARE_FROM_TAG: self.compare_from.isoformat(),
            EXTRACT_FROM_TAG: self.extract_from.isoformat(),
        }

    @classmethod
    def from_tags(
        cls, tags: Mapping[str, str], mutable_days: int, first_day: date, today: date | None = None
    ) -> Cycle:
        """The cycle a run's tags describe; a run launched without them (from the UI) is the
        nightly run for yesterday."""
        default = cls.nightly(yesterday(today), mutable_days, first_day)
        if AS_OF_TAG not in tags:
            return default
        as_of = date.fromisoformat(tags[AS_OF_TAG])
        return cls(
            Mode(tags.get(MODE_TAG, Mode.NIGHTLY)),
            as_of,
            date.fromisoformat(tags.get(COMPARE_FROM_TAG, default.compare_from.isoformat())),
            date.fromisoformat(tags.get(EXTRACT_FROM_TAG, as_of.isoformat())),
        )


def extracted_days(tags: Mapping[str, str]) -> int | None:
    """How many days the cycle a run belongs to extracts whatever their fingerprints say
    (`extract_from` to `as_of`): every day of a range, one day of a nightly or an audit, which
    re-extract only the days they find changed. None for a run launched outside a cycle (from
    the UI), whose reach its tags do not say."""
    if AS_OF_TAG not in tags or EXTRACT_FROM_TAG not in tags:
        return None
    as_of, extract_from = (date.fromisoformat(tags[t]) for t in (AS_OF_TAG, EXTRACT_FROM_TAG))
    return (as_of - extract_from).days + 1


def as_of_day(tags: Mapping[str, str]) -> date:
    """The as-of day of a run: its tag, or, for a run launched without one, yesterday."""
    return date.fromisoformat(tags[AS_OF_TAG]) if AS_OF_TAG in tags else yesterday()


def yesterday(today: date | None = None) -> date:
    """The last day that is over, in UTC: what a nightly run is for."""
    return (today or datetime.now(UTC).date()) - timedelta(days=1)
