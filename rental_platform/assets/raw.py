"""Raw: a faithful, typed copy of the source, plus when each row was extracted; and what
differs between the source and the lake (`raw/source_changes`)."""

from datetime import timedelta

import dagster as dg
from dagster import AssetExecutionContext

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.assets.layer import (
    LAKE_POOL,
    OWNERS,
    LayerStep,
    run_with_retries,
    spark_multi_asset,
)
from rental_platform.contract import StepRequest
from rental_platform.cycle import SOURCE_CHANGES, Cycle
from rental_platform.partitions import PlatformPartitions
from rental_platform.tables import Grain, Layer

KINDS = frozenset({"spark", "mysql", "parquet"})
# The nightly plan reads the curated listing history, so in the raw group it drew the group graph
# as a loop (curated before raw): it is a group of its own, after curated.
NIGHTLY_GROUP = "nightly"


def build_raw_assets(
    partitions: PlatformPartitions, mutable_days: int
) -> list[dg.AssetsDefinition]:
    return [
        spark_multi_asset(
            LayerStep(
                "raw_snapshots",
                "extract_snapshot",
                KINDS,
                "Full snapshots of the small source tables, stamped with the run's as-of day.",
                reads_source=True,
                stamped=True,
            ),
            tables.tables_of(Layer.RAW, Grain.SNAPSHOT),
            None,
        ),
        spark_multi_asset(
            LayerStep(
                "raw_daily",
                "extract_daily",
                KINDS,
                "Each day's bookings and page views, read over JDBC, each day recorded with the "
                "fingerprint of its source rows.",
                reads_source=True,
                first_day=partitions.first_day,
            ),
            tables.tables_of(Layer.RAW, Grain.DAILY),
            partitions.daily,
        ),
        source_changes_asset(partitions, mutable_days),
    ]


def source_changes_asset(partitions: PlatformPartitions, mutable_days: int) -> dg.AssetsDefinition:
    """The plan of a nightly run: which days of bookings and views to re-extract (the source's
    fingerprints differ from the lake's, or a row moved) and which to re-curate only."""

    @dg.asset(
        key=SOURCE_CHANGES,
        group_name=NIGHTLY_GROUP,
        kinds={"spark", "mysql"},
        owners=OWNERS,
        description="Which source days differ from the lake: compares per-day fingerprints of "
        f"bookings and views over the mutable horizon (RENTAL_MUTABLE_DAYS, {mutable_days} days "
        "before the as-of day; every day in an audit). Its metadata is the plan the daily runs "
        "carry out: each day with why.",
        deps=[asset_key(tables.CURATED_LISTINGS_HISTORY)],
        required_resource_keys={"spark", "lake", "limits", "source"},
        pool=LAKE_POOL,
    )
    def source_changes(context: AssetExecutionContext) -> dg.MaterializeResult:
        cycle = Cycle.from_tags(context.run.tags, mutable_days, partitions.first_day)
        resources = context.resources
        request = StepRequest(
            step="detect_changes",
            tables=(),
            lake_root=resources.lake.root,
            window_start=cycle.compare_from,
            window_end=cycle.as_of + timedelta(days=1),
            source=resources.source.connection(),
            limits=resources.limits.limits(),
            first_day=partitions.first_day,
            force_from=cycle.extract_from,
            writer=f"run {context.run.run_id} (source_changes)",
        )
        run = run_with_retries(context, resources.spark, request)
        report, plan = run.report, run.report.plan
        return dg.MaterializeResult(
            metadata={
                **run.job_metadata,
                "mode": str(cycle.mode),
                "as_of": cycle.as_of.isoformat(),
                "compared_from": cycle.compare_from.isoformat(),
                "days_to_extract": {t: len(d) for t, d in plan.get("extract", {}).items()},
                "days_to_curate": {t: len(d) for t, d in plan.get("curate", {}).items()},
                "plan": dg.MetadataValue.json(plan),
                "spark_step_seconds": report.duration_seconds,
            }
        )

    return source_changes
