"""The asset checks each table carries, as Dagster sees them. Which checks a table has, and
how they are computed, is decided in `rental_platform/spark/quality.py` (the Spark steps
compute them); this module declares them and turns their results into Dagster's."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import dagster as dg

# Not exported by Dagster: an evaluation reported per partition needs it to target the
# partition's materialisation, as the AssetCheckResult of a one-partition run would.
# test_end_to_end's test_each_partition_has_its_check_results pins that it does.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as MaterializationTarget,
)

from rental_platform.contract import CheckResult, checks_for
from rental_platform.tables import TABLES, Table


def asset_key(table: Table) -> dg.AssetKey:
    return dg.AssetKey([str(table.layer), table.name])


def check_specs(
    tables: tuple[Table, ...], partitions_def: dg.PartitionsDefinition | None
) -> list[dg.AssetCheckSpec]:
    """A failing blocking check stops the downstream assets of the run; the others warn. The
    checks of a partitioned table are partitioned too: each partition has its own results.
    Dagster calls a partitioned check a preview, and warns on every construction (so on every
    start of every process that loads the definitions): that one warning is silenced here, and
    `test_each_partition_has_its_check_results` pins the behaviour relied on."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="Specifying a partitions_def on an AssetCheckSpec",
            category=dg.PreviewWarning,
        )
        return [
            dg.AssetCheckSpec(
                spec.name,
                asset=asset_key(table),
                description=spec.description,
                blocking=spec.blocking,
                partitions_def=partitions_def,
            )
            for table in tables
            for spec in checks_for(table)
        ]


def _outcome(result: CheckResult) -> dict[str, Any]:
    """What Dagster's check results and evaluations both say of a check's result."""
    return {
        "asset_key": asset_key(TABLES[result.table]),
        "check_name": result.name,
        "passed": result.passed,
        "severity": dg.AssetCheckSeverity.ERROR if result.blocking else dg.AssetCheckSeverity.WARN,
        "description": result.description,
        "metadata": result.metadata,
    }


def to_check_result(result: CheckResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(**_outcome(result))


def to_partition_evaluation(
    result: CheckResult, partition: str, target: MaterializationTarget | None
) -> dg.AssetCheckEvaluation:
    """A check's result for one partition of a run (`CheckResult.of_partition`), recorded
    against the materialisation of it that the check judged (`target`)."""
    return dg.AssetCheckEvaluation(
        **_outcome(result),
        blocking=result.blocking,
        partition=partition,
        target_materialization_data=target,
    )


def latest_materializations(
    context: dg.AssetExecutionContext, key: dg.AssetKey, partitions: Sequence[str]
) -> dict[str, MaterializationTarget]:
    """Each partition's materialisation by this run, as a check evaluation's target: Dagster
    counts a partition's check as passed (for the automation's blocking-checks condition, for
    the UI) only when its latest evaluation targets the partition's latest materialisation."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=list(partitions)),
        limit=len(partitions),
    ).records
    return {
        record.partition_key: MaterializationTarget(
            run_id=record.run_id, storage_id=record.storage_id, timestamp=record.timestamp
        )
        for record in records
        if record.run_id == context.run.run_id and record.partition_key is not None
    }
