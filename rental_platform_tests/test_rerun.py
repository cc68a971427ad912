"""Running a day again: the listings snapshot of that day is taken already, so the snapshot step
takes nothing (the history only moves forward), and the run succeeds with every check of the
unchanged tables answered. On a remote runner a check without a result fails the step (its
Pipes session requires one); locally Dagster would show the check as not run."""

from __future__ import annotations

from datetime import date

import dagster as dg

from rental_platform_tests.harness import Platform

DAY = date(2025, 1, 1)


def test_a_second_run_of_a_day_answers_the_snapshot_checks_as_unchanged(
    platform: Platform,
) -> None:
    platform.load_worked_example()
    platform.run(DAY, DAY)

    outcomes = platform.run(DAY, DAY)

    (snapshots,) = [o for o in outcomes if o.job == "snapshots"]
    evaluations = [
        record.dagster_event.event_specific_data
        for record in platform.instance.all_logs(
            snapshots.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
    ]
    raw = {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in evaluations
        if e.asset_key.to_user_string() in ("raw/apartments", "raw/apartment_attributes")
    }
    assert len(raw) == 6  # three checks on each snapshot table
    assert all(e.passed for e in raw.values())
    reason = raw[("raw/apartments", "row_count_matches_source")].metadata["unchanged"].value
    assert reason.startswith("no snapshot taken for 2025-01-01: the one of 2025-01-01")
