"""The asset checks each table carries, as Dagster sees them. Which checks a table has, and
how they are computed, is decided in `rental_platform/spark/quality.py` (the Spark steps
compute them); this module declares them and turns their results into Dagster's."""

from __future__ import annotations

import dagster as dg

from rental_platform.spark.quality import CheckResult, checks_for
from rental_platform.tables import TABLES, Table


def asset_key(table: Table) -> dg.AssetKey:
    return dg.AssetKey([str(table.layer), table.name])


def check_specs(tables: tuple[Table, ...]) -> list[dg.AssetCheckSpec]:
    """A failing blocking check stops the downstream assets of the run; the others warn."""
    return [
        dg.AssetCheckSpec(
            spec.name, asset=asset_key(table), description=spec.description, blocking=spec.blocking
        )
        for table in tables
        for spec in checks_for(table)
    ]


def to_check_result(result: CheckResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset_key(TABLES[result.table]),
        check_name=result.name,
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR if result.blocking else dg.AssetCheckSeverity.WARN,
        description=result.description,
        metadata=result.metadata,
    )
