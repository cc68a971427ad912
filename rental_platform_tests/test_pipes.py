"""The remote side of a step, run locally by the same Pipes contract a Glue or EMR job uses:
`spark/entrypoint.py` in a subprocess sends back the StepReport."""

from __future__ import annotations

import json
import sys
from datetime import date

import dagster as dg

from rental_platform import tables
from rental_platform.assets.checks import asset_key, check_specs, to_check_result
from rental_platform.contract import SourceConnection, StepReport, StepRequest
from rental_platform.spark.entrypoint import REQUESTS_EXTRA
from rental_platform_tests import worked_example as example
from rental_platform_tests.harness import Platform

SNAPSHOTS = (tables.RAW_APARTMENTS, tables.RAW_APARTMENT_ATTRIBUTES)


def test_step_request_travels_without_the_password() -> None:
    request = StepRequest(
        "extract_daily",
        ("raw.bookings",),
        "/lake",
        source=SourceConnection("jdbc:mysql://db:3306/rental", "reader", "topsecret"),
        only_days={"raw.bookings": (date(2025, 1, 2),)},
        source_fingerprints={"raw.bookings": {"2025-01-02": {"rows": 3, "digest": "7"}}},
    )
    sent = request.to_json()
    assert "topsecret" not in json.dumps(sent)
    assert StepRequest.from_json(sent, "topsecret") == request


def test_entrypoint_reports_through_pipes(platform: Platform) -> None:
    """One channel: the whole StepReport, as one message, and nothing reported besides it;
    the asset makes its materialisations and check results of the report."""
    platform.execute("INSERT INTO apartments VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", example.APARTMENTS)
    mysql = platform.settings.mysql
    request = StepRequest(
        "extract_snapshot",
        tuple(t.id for t in SNAPSHOTS),
        platform.settings.lake_root,
        source=SourceConnection(mysql.jdbc_url, mysql.user),
        as_of=date(2025, 2, 28),
    )
    reported: list = []

    @dg.multi_asset(
        specs=[dg.AssetSpec(asset_key(t)) for t in SNAPSHOTS],
        check_specs=check_specs(SNAPSHOTS, None),
    )
    def remote_snapshots(context, pipes: dg.PipesSubprocessClient):
        invocation = pipes.run(
            command=[sys.executable, "-m", "rental_platform.spark.entrypoint"],
            context=context,
            extras={REQUESTS_EXTRA: [request.to_json()]},
            env={"RENTAL_SPARK_MASTER": "local[1]", "RENTAL_MYSQL_PASSWORD": mysql.password},
        )
        reported.extend(invocation.get_results(implicit_materializations=False))
        (message,) = invocation.get_custom_messages()
        (report,) = StepReport.from_messages([message])
        for table in report.tables.values():
            yield dg.MaterializeResult(
                asset_key=asset_key(tables.TABLES[table.table]),
                metadata={"dagster/row_count": table.row_count},
            )
        for check in report.checks:
            yield to_check_result(check)

    result = dg.materialize(
        [remote_snapshots],
        resources={"pipes": dg.PipesSubprocessClient()},
        instance=platform.instance,
    )
    assert result.success
    assert reported == []
    rows = {
        m.asset_key.to_user_string(): m.metadata["dagster/row_count"].value
        for m in result.asset_materializations_for_node("remote_snapshots")
    }
    assert rows == {"raw/apartments": 3, "raw/apartment_attributes": 0}
    checks = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in result.get_asset_check_evaluations()
    }
    assert checks[("raw/apartments", "row_count_matches_source")]
    assert checks[("raw/apartment_attributes", "schema_matches_catalogue")]
