"""Which asset checks each table carries. The checks are computed in the Spark steps
(`rental_platform/spark/quality.py`); this module declares them and turns their results
into Dagster's."""

from __future__ import annotations

import dagster as dg

from rental_platform.spark.quality import CheckResult
from rental_platform.tables import Layer, Table

CHECKS_BY_LAYER: dict[Layer, dict[str, str]] = {
    Layer.RAW: {
        "row_count_matches_source": "The lake holds as many rows as the source for the window.",
    },
    Layer.CURATED: {
        "rows_accounted_for": "raw = curated + quarantined + collapsed duplicates; "
        "reports quarantined rows by reason.",
        "primary_key_unique": "The key columns are unique and never null.",
    },
    Layer.PRESENTATION: {
        "primary_key_unique": "The key columns are unique and never null.",
    },
}


def asset_key(table: Table) -> dg.AssetKey:
    return dg.AssetKey([str(table.layer), table.name])


def check_specs(tables: tuple[Table, ...]) -> list[dg.AssetCheckSpec]:
    """Blocking specs: a failing check stops the downstream assets of the run."""
    return [
        dg.AssetCheckSpec(name, asset=asset_key(table), description=description, blocking=True)
        for table in tables
        for name, description in CHECKS_BY_LAYER.get(table.layer, {}).items()
    ]


def to_check_result(result: CheckResult, key: dg.AssetKey) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=result.name,
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=result.description,
        metadata=result.metadata,
    )
