"""One multi-asset per layer and partition grain, each running one Spark step.

The multi-asset describes its tables (from the catalogue), builds a `StepRequest` for the
selected tables and the run's window, hands it to the Spark runner, optionally publishes the
result to the warehouse, and turns the step's report into materialisations and check results.
"""

from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

import dagster as dg
from dagster import AssetExecutionContext

from rental_platform.assets.checks import (
    MaterializationTarget,
    asset_key,
    check_specs,
    latest_materializations,
    to_check_result,
    to_partition_evaluation,
)
from rental_platform.contract import CheckResult, StepReport, StepRequest
from rental_platform.cycle import (
    PLAN_TAG,
    as_of_day,
    periods_of_run,
    plan_of_run,
    planned_days,
)
from rental_platform.resources.spark import SparkRunner, StepRun
from rental_platform.spark import layout
from rental_platform.tables import TABLES, Layer, Table

OWNERS = ["team:data-platform"]
CheckEvent = dg.AssetCheckResult | dg.AssetCheckEvaluation | dg.Output
Result = TypeVar("Result")
MAX_RETRIES = 3
RETRY_BASE_SECONDS = 10
# Error texts of failures that a later try can get past.
TRANSIENT_ERRORS = (
    "Communications link failure",
    "Could not connect",
    "Connection refused",
    "Connection reset",
    "Socket fail",
    # The source's server closed the connection (a KILL, a restart, a failover).
    "unexpected end of stream",
    "socket was closed",
    "Connection killed",
    "Lost connection",
    "Broken pipe",
    # The warehouse's server ended the session (an administrator, a restart, a failover).
    "terminating connection due to administrator command",
    "server closed the connection unexpectedly",
    "the connection is lost",
    "ExecutorLostFailure",
    "Executor lost",
    "Py4JNetworkError",
    # A DuckDB warehouse has one writer process at a time: another process (an analyst's query,
    # the UI test's) holds the file for a moment.
    "Could not set lock on file",
)
# ...unless the cause will not go away by itself: a wrong password or database name.
PERMANENT_ERRORS = ("Access denied", "Unknown database")
# Every step writes the lake, and the KPI steps also publish: all hold a slot of this pool, which
# dagster.yaml limits to one, so overlapping runs take turns step by step (one writer at a time).
LAKE_POOL = "lake"
# Quarantine is a group of its own: beside curated, the graph showed two boxes of each name.
GROUPS = {
    Layer.RAW: "raw",
    Layer.CURATED: "curated",
    Layer.QUARANTINE: "quarantine",
    Layer.PRESENTATION: "presentation",
}


@dataclass(frozen=True)
class LayerStep:
    """What a multi-asset needs to know besides its tables."""

    name: str
    step: str
    kinds: frozenset[str]
    description: str
    reads_source: bool = False
    publishes: bool = False
    automation: dg.AutomationCondition | None = None
    # Stamps what it writes with the run's as-of day (the listings snapshot).
    stamped: bool = False
    # The first day of the daily partitions: no day before it exists.
    first_day: date | None = None


def table_schema(table: Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(c.name, c.type, description=c.description) for c in table.columns]
    )


def spark_multi_asset(
    layer_step: LayerStep,
    tables: tuple[Table, ...],
    partitions_def: dg.PartitionsDefinition | None,
    inputs: Mapping[str, tuple[Table | dg.AssetDep, ...]] | None = None,
    can_subset: bool = True,
) -> dg.AssetsDefinition:
    """`inputs` names, per table name, the tables it is computed from (its upstream assets),
    as an `AssetDep` where it reads other partitions than its own window's. `can_subset`: a
    run may materialise some of the tables only."""
    specs = [
        dg.AssetSpec(
            asset_key(table),
            description=table.description,
            group_name=GROUPS[table.layer],
            kinds=set(layer_step.kinds),
            owners=OWNERS,
            deps=[
                upstream if isinstance(upstream, dg.AssetDep) else asset_key(upstream)
                for upstream in (inputs or {}).get(table.name, ())
            ],
            metadata={"dagster/column_schema": table_schema(table), "table": table.id},
            automation_condition=layer_step.automation,
        )
        for table in tables
    ]
    resource_keys = {"spark", "lake", "limits", "catalog"}
    if layer_step.reads_source:
        resource_keys.add("source")
    if layer_step.publishes:
        resource_keys.add("warehouse")

    @dg.multi_asset(
        name=layer_step.name,
        description=layer_step.description,
        specs=specs,
        check_specs=check_specs(tables, partitions_def),
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run() if partitions_def else None,
        can_subset=can_subset,
        required_resource_keys=resource_keys,
        pool=LAKE_POOL,
    )
    def _multi_asset(
        context: AssetExecutionContext,
    ) -> Iterator[CheckEvent | dg.MaterializeResult]:
        yield from _run(context, layer_step, tables)

    return _multi_asset


def _window(context: AssetExecutionContext) -> tuple[date, date] | None:
    if context.assets_def.partitions_def is None:
        return None
    window = context.partition_time_window
    return window.start.date(), window.end.date()


def _run(
    context: AssetExecutionContext, layer_step: LayerStep, tables: tuple[Table, ...]
) -> Iterator[CheckEvent | dg.MaterializeResult]:
    selected = [t for t in tables if asset_key(t) in context.selected_asset_keys]
    window = _window(context)
    resources = context.resources
    request = StepRequest(
        step=layer_step.step,
        tables=tuple(t.id for t in selected),
        lake_root=resources.lake.root,
        window_start=window[0] if window else None,
        window_end=window[1] if window else None,
        source=resources.source.connection() if layer_step.reads_source else None,
        limits=resources.limits.limits(),
        as_of=as_of_day(context.run.tags) if layer_step.stamped else None,
        first_day=layer_step.first_day,
        writer=f"run {context.run.run_id} ({layer_step.name})",
        only_days=_planned_days(context, selected),
    )
    context.log.info(f"Spark step {request.step} for {', '.join(request.tables)}, window {window}")
    run = run_with_retries(context, resources.spark, request)
    report = run.report
    committed = [t for t in selected if t.id not in report.rejected]
    if report.committed is not None:
        ids = [t.id for t in committed]
        changes = with_retries(
            context, lambda: resources.catalog.register_commit(report.committed, ids)
        )
        for line in changes:
            context.log.info(line)

    for table in committed:
        metadata = _metadata(table, report, window) | run.job_metadata
        for key, figures in report.tables[table.id].partitions.items():
            context.add_asset_metadata(
                _partition_metadata(figures), asset_key=asset_key(table), partition_key=key
            )
        if glue_table := resources.catalog.table_name(table):
            metadata["glue_table"] = glue_table
        if layer_step.publishes and window and report.committed is not None:
            metadata |= with_retries(
                context, lambda t=table: _publish(context, t, window, report.committed)
            )
        yield dg.MaterializeResult(asset_key=asset_key(table), metadata=metadata)
    yield from _check_events(context, report)
    if report.rejected:
        raise dg.Failure(
            description=_rejection(report),
            metadata={"rejected_versions": dg.MetadataValue.json(report.rejected)},
        )


def _check_events(context: AssetExecutionContext, report: StepReport) -> Iterator[CheckEvent]:
    """The step's check results, each recorded against every partition the step wrote: the
    partition's own result where the check judged partitions one by one, else the window's.
    Every selected check needs a result for each partition of the run (else Dagster lists it
    as skipped, and a remote step's Pipes session fails without one). A partition the step
    did not rewrite (a snapshot taken already, a day the nightly plan left alone) keeps its
    committed version, which was committed only because its blocking checks passed: those
    are reported passed, as unchanged; a warning's result of the run is recorded there too."""
    selected = context.selected_asset_check_keys
    partitioned = context.assets_def.partitions_def is not None
    # What each partition's evaluation targets: this run's materialisation of it (none for a
    # rejected table, which this run did not materialise).
    checked = {spec.asset_key for spec in context.assets_def.check_specs}
    rejected = {asset_key(TABLES[table_id]) for table_id in report.rejected}
    targets = {
        key: latest_materializations(context, key, context.partition_keys)
        for key in (checked & context.selected_asset_keys) - rejected
        if partitioned
    }
    evaluated: set[tuple[dg.AssetCheckKey, str | None]] = set()
    judged: dict[dg.AssetCheckKey, CheckResult] = {}
    for check in report.checks:
        key = dg.AssetCheckKey(asset_key(TABLES[check.table]), check.name)
        if key not in selected:
            continue
        judged[key] = check
        if not partitioned:
            evaluated.add((key, None))
            yield to_check_result(check)
            continue
        table_report = report.tables.get(check.table)
        rewritten = [
            partition
            for partition, figures in (table_report.partitions if table_report else {}).items()
            if figures["rewritten"]
        ]
        # A check of a table the step wrote nothing of (its source unreadable, say) judged the
        # run's whole range.
        for partition in rewritten or context.partition_keys:
            evaluated.add((key, partition))
            target = targets.get(key.asset_key, {}).get(partition)
            yield to_partition_evaluation(check.of_partition(partition), partition, target)
    unchanged = report.skipped or "this run did not rewrite the partition"
    # An unpartitioned table is either rewritten (and checked) or skipped as a whole.
    partitions = context.partition_keys if partitioned else [None] if report.skipped else []
    for spec in context.assets_def.check_specs:
        if spec.key not in selected:
            continue
        for partition in partitions:
            if (spec.key, partition) in evaluated:
                continue
            target = targets.get(spec.asset_key, {}).get(partition) if partition else None
            if spec.blocking:
                yield _unchanged(spec, partition, unchanged, target)
            elif partition is not None and spec.key in judged:
                # A warning judges the table as it stands (freshness): each partition's too.
                check = judged[spec.key].of_partition(partition)
                yield to_partition_evaluation(check, partition, target)
        if partitioned:
            # The check's output, which a result of the whole run would have yielded: what
            # gates the steps downstream of a blocking check.
            yield dg.Output(
                None, output_name=context.assets_def.get_output_name_for_asset_check_key(spec.key)
            )


def _unchanged(
    spec: dg.AssetCheckSpec,
    partition: str | None,
    reason: str,
    target: MaterializationTarget | None,
) -> dg.AssetCheckResult | dg.AssetCheckEvaluation:
    outcome = {
        "asset_key": spec.asset_key,
        "check_name": spec.name,
        "passed": True,
        "metadata": {"unchanged": reason},
    }
    if partition is None:
        return dg.AssetCheckResult(**outcome)
    return dg.AssetCheckEvaluation(
        **outcome, blocking=True, partition=partition, target_materialization_data=target
    )


def _planned_days(
    context: AssetExecutionContext, tables: list[Table]
) -> dict[str, tuple[date, ...]] | None:
    """The days (or periods) of each table a run of the nightly cycle works on: a daily
    run's, those of the plan its tag names; a KPI run's, the stale periods its tag lists.
    None: every one of the run's range, as for a backfill."""
    periods = periods_of_run(context.run.tags)
    if periods is not None:
        return {table.id: periods for table in tables}
    plan_run = context.run.tags.get(PLAN_TAG)
    if plan_run is None:
        return None
    plan = plan_of_run(context.instance, plan_run)
    if plan is None:
        raise dg.Failure(f"run {plan_run}, whose plan this run carries out, left no plan")
    return planned_days(plan)


def _rejection(report: StepReport) -> str:
    """Which blocking checks failed, and that nothing of those tables was committed."""
    failed = [
        f"{check.table}: {check.name} ({check.description})"
        for check in report.checks
        if not check.passed and check.blocking
    ]
    return (
        "blocking checks failed, so these tables were not committed (the lake and the "
        f"warehouse keep their previous versions): {', '.join(report.rejected)}. "
        + "; ".join(failed)
        + ". The rejected versions are listed in this failure's metadata."
    )


def run_with_retries(
    context: AssetExecutionContext, runner: SparkRunner, request: StepRequest
) -> StepRun:
    """Run the step; a transient failure (the source connection dropped, a Spark executor
    lost) is retried with exponential backoff, and the error of the last try fails the run."""
    return with_retries(context, lambda: runner.run(context, request))


def with_retries(context: AssetExecutionContext, work: Callable[[], Result]) -> Result:
    """`work`, or, if it fails for a reason that goes away by itself, a retry of the whole
    step after an exponential backoff (the step is idempotent: it replaces what it wrote)."""
    try:
        return work()
    except Exception as error:
        if not is_transient(error):
            raise
        wait = RETRY_BASE_SECONDS * 2**context.retry_number
        context.log.warning(f"Transient failure, retrying in {wait} s: {error}")
        raise dg.RetryRequested(max_retries=MAX_RETRIES, seconds_to_wait=wait) from error


def is_transient(error: BaseException) -> bool:
    text = str(error)
    if any(marker in text for marker in PERMANENT_ERRORS):
        return False
    return any(marker in text for marker in TRANSIENT_ERRORS)


def _partition_metadata(figures: Mapping[str, Any]) -> dict[str, Any]:
    """One partition's own metadata: its rows and figures as committed."""
    return {"dagster/row_count": figures["rows"]} | {
        name: value for name, value in figures.items() if name != "rows"
    }


def _metadata(table: Table, report: StepReport, window: tuple[date, date] | None) -> dict:
    """The run's metadata, on every partition it materialises: a partition's own row count
    and figures (`_partition_metadata`) come on top."""
    # The column schema is the asset's definition metadata: repeated here it would be stored
    # again with each of a backfill's hundreds of per-partition materialisations.
    table_report = report.tables[table.id]
    metadata = {
        "window_rows" if window else "dagster/row_count": table_report.row_count,
        "spark_step_seconds": report.duration_seconds,
        **table_report.metadata,
    }
    if report.committed is not None:
        metadata["lake_commit"] = report.committed
    if "preview" in metadata:
        metadata["preview"] = dg.MetadataValue.table(
            [dg.TableRecord(row) for row in metadata["preview"]], schema=table_schema(table)
        )
    if window:
        metadata["window_start"] = window[0].isoformat()
        metadata["window_end"] = window[1].isoformat()
    return metadata


def _publish(
    context: AssetExecutionContext, table: Table, window: tuple[date, date], commit: int
) -> dict:
    """Replace the window's rows in the warehouse with what the step committed to the lake."""
    starts = layout.periods(table.grain, *window)
    lake, warehouse = context.resources.lake, context.resources.warehouse
    files = lake.parquet_files(table, starts, commit)
    in_place = lake.on_s3 and warehouse.copies_from_s3
    with nullcontext(files) if in_place else lake.local_copies(files) as readable:
        publication = warehouse.publish(table, window[0], window[1], readable, context.run.run_id)
    return {"warehouse": warehouse.target, "published_rows": publication.row_count}
