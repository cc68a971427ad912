"""Raw: a faithful, typed copy of the source, plus when each row was extracted; and what
differs between the source and the lake (`raw/source_changes`)."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import ClassVar

import dagster as dg
from dagster import AssetExecutionContext

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.assets.layer import (
    OWNERS,
    LayerAssets,
    LayerStep,
    SparkAssets,
    StepEvent,
)
from rental_platform.contract import StepRequest
from rental_platform.cycle import SOURCE_CHANGES
from rental_platform.cycle_tags import Cycle
from rental_platform.partitions import PlatformPartitions
from rental_platform.resources.spark import StepRun
from rental_platform.tables import Grain, Layer

KINDS = frozenset({"spark", "mysql", "parquet"})
# The nightly plan reads the curated listing history, so in the raw group it drew the group graph
# as a loop (curated before raw): it is a group of its own, after curated.
NIGHTLY_GROUP = "nightly"


def build_raw_steps(partitions: PlatformPartitions, mutable_days: int) -> list[SparkAssets]:
    return [
        LayerAssets(
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
        LayerAssets(
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
        SourceChangesAssets(partitions.first_day, mutable_days),
    ]


@dataclass(frozen=True)
class SourceChangesAssets(SparkAssets):
    """The plan of a nightly run: which days of bookings and views to re-extract (the source's
    fingerprints differ from the lake's, or a row moved) and which to re-curate only."""

    first_day: date
    mutable_days: int

    name: ClassVar[str] = SOURCE_CHANGES.to_python_identifier()
    description: ClassVar[str] = "Compare the source's days with the lake's."
    grain: ClassVar[Grain] = Grain.SNAPSHOT
    partitions_def: ClassVar[None] = None
    resource_keys: ClassVar[frozenset[str]] = frozenset({"spark", "lake", "limits", "source"})

    def specs(self) -> list[dg.AssetSpec]:
        return [
            dg.AssetSpec(
                SOURCE_CHANGES,
                group_name=NIGHTLY_GROUP,
                kinds={"spark", "mysql"},
                owners=OWNERS,
                description="Which source days differ from the lake: compares per-day "
                "fingerprints of bookings and views over the mutable horizon "
                f"(RENTAL_MUTABLE_DAYS, {self.mutable_days} days before the as-of day; every "
                "day in an audit). Its metadata is the plan the daily runs carry out: each day "
                "with why.",
                deps=[asset_key(tables.CURATED_LISTINGS_HISTORY)],
            )
        ]

    def request(self, context: AssetExecutionContext) -> StepRequest | None:
        if SOURCE_CHANGES not in context.selected_asset_keys:
            return None
        cycle = Cycle.from_tags(context.run.tags, self.mutable_days, self.first_day)
        resources = context.resources
        return StepRequest(
            step="detect_changes",
            tables=(),
            lake_root=resources.lake.root,
            window_start=cycle.compare_from,
            window_end=cycle.as_of + timedelta(days=1),
            source=resources.source.connection(),
            limits=resources.limits.limits(),
            first_day=self.first_day,
            force_from=cycle.extract_from,
            writer=f"run {context.run.run_id} (source_changes)",
        )

    def events(
        self, context: AssetExecutionContext, request: StepRequest, run: StepRun
    ) -> Iterator[StepEvent]:
        # The cycle the request was made for (a run without an as-of tag takes yesterday's,
        # and the day may have turned since).
        assert request.window_start and request.window_end
        mode = Cycle.from_tags(context.run.tags, self.mutable_days, self.first_day).mode
        report, plan = run.report, run.report.plan
        yield dg.MaterializeResult(
            asset_key=SOURCE_CHANGES,
            metadata={
                **run.job_metadata,
                "mode": str(mode),
                "as_of": (request.window_end - timedelta(days=1)).isoformat(),
                "compared_from": request.window_start.isoformat(),
                "days_to_extract": {t: len(d) for t, d in plan.get("extract", {}).items()},
                "days_to_curate": {t: len(d) for t, d in plan.get("curate", {}).items()},
                "plan": dg.MetadataValue.json(plan),
                "spark_step_seconds": report.duration_seconds,
            },
        )
