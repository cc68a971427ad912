"""Multi-assets running Spark steps: one per layer and partition grain, or, on a remote
runner, one per job, whose steps run in one remote launch.

A step's assets (`LayerAssets`) describe its tables (from the catalogue), build a `StepRequest`
for the selected tables and the run's window, optionally publish the result to the warehouse,
and turn the step's report into materialisations and check results.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
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
from rental_platform.cycle import PLAN_TAG, periods_of_run, plan_of_run, planned_days
from rental_platform.cycle_tags import as_of_day
from rental_platform.resources.spark import StepRun
from rental_platform.spark import layout
from rental_platform.tables import TABLES, Grain, Layer, Table

OWNERS = ["team:data-platform"]
CheckEvent = dg.AssetCheckResult | dg.AssetCheckEvaluation | dg.Output
StepEvent = CheckEvent | dg.MaterializeResult
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
# dagster.yaml limits to one, so overlapping runs take turns multi-asset by multi-asset (one
# writer at a time).
LAKE_POOL = "lake"
# Quarantine is a group of its own: beside curated, the graph showed two boxes of each name.
GROUPS = {
    Layer.RAW: "raw",
    Layer.CURATED: "curated",
    Layer.QUARANTINE: "quarantine",
    Layer.PRESENTATION: "presentation",
}

# How long after the comparison its fingerprints may stand in for the extraction's own. A run
# that carries out its plan later (re-executed the next morning) checksums the days again: a
# change made and undone between the comparison and the read would otherwise go unseen until
# the audit (extract.py: a fingerprint read before the rows misses no change made after it).
FINGERPRINTS_FRESH_FOR = timedelta(minutes=15)


@dataclass(frozen=True)
class LayerStep:
    """What a step needs to know besides its tables."""

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
    # The digest of the code that computes the tables (`code_version.py`), for Dagster's
    # code-version staleness and automation.
    code_version: str | None = None


def table_schema(table: Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(c.name, c.type, description=c.description) for c in table.columns]
    )


class SparkAssets(ABC):
    """One Spark step and the assets it writes: the specs it declares, the request it sends for
    a run, and what Dagster records of its report. A multi-asset runs one of them (a local
    runner), or several of one job in a single remote launch (`spark_multi_assets`)."""

    name: str
    description: str
    # What the step writes is of one grain, so of one partitions definition (and of one job).
    grain: Grain
    partitions_def: dg.PartitionsDefinition | None
    resource_keys: frozenset[str]
    # A run may materialise some of the assets only.
    can_subset: bool = True

    @abstractmethod
    def specs(self) -> list[dg.AssetSpec]: ...

    def check_specs(self) -> list[dg.AssetCheckSpec]:
        return []

    @abstractmethod
    def request(self, context: AssetExecutionContext) -> StepRequest | None:
        """The step's request for this run; None when the run selected none of its assets."""

    @abstractmethod
    def events(
        self, context: AssetExecutionContext, request: StepRequest, run: StepRun
    ) -> Iterator[StepEvent]:
        """What Dagster records of the step's run of `request`: materialisations and check
        results, and a `dg.Failure` when a blocking check rejected a table."""


@dataclass(frozen=True)
class LayerAssets(SparkAssets):
    """A layer's tables of one partition grain and the step that writes them. `inputs` names,
    per table name, the tables it is computed from (its upstream assets), as an `AssetDep`
    where it reads other partitions than its own window's."""

    layer_step: LayerStep
    tables: tuple[Table, ...]
    partitions_def: dg.PartitionsDefinition | None
    inputs: Mapping[str, tuple[Table | dg.AssetDep, ...]] | None = None
    can_subset: bool = True

    @property
    def name(self) -> str:
        return self.layer_step.name

    @property
    def description(self) -> str:
        return self.layer_step.description

    @property
    def grain(self) -> Grain:
        return self.tables[0].grain

    @property
    def resource_keys(self) -> frozenset[str]:
        step = self.layer_step
        return frozenset(
            {"spark", "lake", "limits", "catalog"}
            | ({"source"} if step.reads_source else set())
            | ({"warehouse"} if step.publishes else set())
        )

    def specs(self) -> list[dg.AssetSpec]:
        return [
            dg.AssetSpec(
                asset_key(table),
                description=table.description,
                group_name=GROUPS[table.layer],
                kinds=set(self.layer_step.kinds),
                owners=OWNERS,
                deps=[
                    upstream if isinstance(upstream, dg.AssetDep) else asset_key(upstream)
                    for upstream in (self.inputs or {}).get(table.name, ())
                ],
                metadata={"dagster/column_schema": table_schema(table), "table": table.id},
                automation_condition=self.layer_step.automation,
                code_version=self.layer_step.code_version,
            )
            for table in self.tables
        ]

    def check_specs(self) -> list[dg.AssetCheckSpec]:
        return check_specs(self.tables, self.partitions_def)

    def _selected(self, context: AssetExecutionContext) -> list[Table]:
        return [t for t in self.tables if asset_key(t) in context.selected_asset_keys]

    def request(self, context: AssetExecutionContext) -> StepRequest | None:
        selected = self._selected(context)
        if not selected:
            return None
        window = _window(context)
        resources, step = context.resources, self.layer_step
        plan = _plan(context)
        return StepRequest(
            step=step.step,
            tables=tuple(t.id for t in selected),
            lake_root=resources.lake.root,
            window_start=window[0] if window else None,
            window_end=window[1] if window else None,
            source=resources.source.connection() if step.reads_source else None,
            limits=resources.limits.limits(),
            as_of=as_of_day(context.run.tags) if step.stamped else None,
            first_day=step.first_day,
            writer=f"run {context.run.run_id} ({step.name})",
            only_days=_planned_days(context, selected, plan),
            source_fingerprints=fresh_fingerprints(plan, selected, datetime.now(UTC)),
        )

    def events(
        self, context: AssetExecutionContext, request: StepRequest, run: StepRun
    ) -> Iterator[StepEvent]:
        selected, window = self._selected(context), _window(context)
        resources, report = context.resources, run.report
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
            if self.layer_step.publishes and window and report.committed is not None:
                metadata |= with_retries(
                    context, lambda t=table: _publish(context, t, window, report.committed)
                )
            yield dg.MaterializeResult(asset_key=asset_key(table), metadata=metadata)
        yield from _check_events(context, report, {asset_key(t) for t in self.tables})
        if report.rejected:
            raise dg.Failure(
                description=_rejection(report),
                metadata={"rejected_versions": dg.MetadataValue.json(report.rejected)},
            )


def spark_multi_assets(
    steps: Sequence[SparkAssets], one_launch_per_job: bool
) -> list[dg.AssetsDefinition]:
    """A multi-asset per step; or, where each step is a remote launch (each billed at least a
    minute), one per `launch_groups` group, whose steps run in one launch."""
    if not one_launch_per_job:
        return [spark_multi_asset([step]) for step in steps]
    return [spark_multi_asset(group) for group in launch_groups(steps)]


def launch_groups(steps: Sequence[SparkAssets]) -> list[list[SparkAssets]]:
    """The steps of each grain (so of each job) together, in dependency order. Dagster allows
    a multi-asset one partition mapping per upstream asset: a step whose mappings differ from
    its group's starts another."""
    groups: list[list[SparkAssets]] = []
    for step in steps:
        group = next((g for g in groups if _fits(g, step)), None)
        if group is None:
            groups.append([step])
        else:
            group.append(step)
    return [_in_dependency_order(group) for group in groups]


def launch_name(group: Sequence[SparkAssets]) -> str:
    """The name of the multi-asset running `group`: its step's, or its grain's."""
    return group[0].name if len(group) == 1 else f"{group[0].grain}_steps"


def _fits(group: list[SparkAssets], step: SparkAssets) -> bool:
    """Whether `step` can join `group`'s multi-asset: the same partitions, and no upstream
    asset read through another partition mapping."""
    if group[0].grain is not step.grain:
        return False
    mappings = {dep.asset_key: dep.partition_mapping for s in group for dep in _deps(s)}
    return all(
        mappings.get(dep.asset_key, dep.partition_mapping) == dep.partition_mapping
        for dep in _deps(step)
    )


def _deps(step: SparkAssets) -> list[dg.AssetDep]:
    return [dep for spec in step.specs() for dep in spec.deps]


def _in_dependency_order(group: list[SparkAssets]) -> list[SparkAssets]:
    """The steps, each after those whose assets it reads."""
    pending, ordered = list(group), []
    while pending:
        written_later = {spec.key for step in pending for spec in step.specs()}
        ready = next(
            step
            for step in pending
            if not {dep.asset_key for dep in _deps(step)}
            & (written_later - {spec.key for spec in step.specs()})
        )
        pending.remove(ready)
        ordered.append(ready)
    return ordered


def spark_multi_asset(steps: Sequence[SparkAssets]) -> dg.AssetsDefinition:
    """One multi-asset running `steps` (of one partitions definition) in one call to the
    Spark runner: a remote runner runs them in one job."""
    first, name = steps[0], launch_name(steps)
    description = (
        first.description
        if len(steps) == 1
        else "In one Spark job: " + " ".join(f"{s.name}: {s.description}" for s in steps)
    )

    @dg.multi_asset(
        name=name,
        description=description,
        specs=[spec for step in steps for spec in step.specs()],
        check_specs=[spec for step in steps for spec in step.check_specs()],
        partitions_def=first.partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run() if first.partitions_def else None,
        can_subset=all(step.can_subset for step in steps),
        required_resource_keys=set().union(*(step.resource_keys for step in steps)),
        pool=LAKE_POOL,
    )
    def _multi_asset(context: AssetExecutionContext) -> Iterator[StepEvent]:
        yield from _run(context, steps)

    return _multi_asset


def _window(context: AssetExecutionContext) -> tuple[date, date] | None:
    if context.assets_def.partitions_def is None:
        return None
    window = context.partition_time_window
    return window.start.date(), window.end.date()


def _run(context: AssetExecutionContext, steps: Sequence[SparkAssets]) -> Iterator[StepEvent]:
    """The selected steps' requests, run in one call to the runner; each step's events as its
    run comes back. A step whose blocking check rejected a table fails the run there: the
    steps after it (which would read it) do not run."""
    planned = [(step, step.request(context)) for step in steps]
    planned = [(step, request) for step, request in planned if request is not None]
    if not planned:
        return
    for step, request in planned:
        context.log.info(
            f"Spark step {request.step} for {', '.join(request.tables) or step.name}, window "
            f"{_window(context)}"
        )
    runs = iter(context.resources.spark.run_steps(context, [r for _, r in planned]))
    for step, request in planned:
        # Only the runner's failures are retried (the whole call: on a remote runner, every
        # step of the launch runs again); those of recording the events are the events' own.
        with retrying(context):
            run = next(runs)
        if run.report.step != request.step:
            raise RuntimeError(f"the report of step {run.report.step} came for {request.step}")
        yield from step.events(context, request, run)
    with retrying(context):
        # A remote job that failed after its last step reported: its error.
        next(runs, None)


def _check_events(
    context: AssetExecutionContext, report: StepReport, keys: set[dg.AssetKey]
) -> Iterator[CheckEvent]:
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
    # The checks of the step's own tables (a multi-asset may run several steps).
    specs = [spec for spec in context.assets_def.check_specs if spec.asset_key in keys]
    checked = {spec.asset_key for spec in specs}
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
    for spec in specs:
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


def _plan(context: AssetExecutionContext) -> dict[str, Any] | None:
    """The change detection's plan a run of the nightly cycle carries out (its tag names the
    run that made it); None for any other run."""
    plan_run = context.run.tags.get(PLAN_TAG)
    if plan_run is None:
        return None
    plan = plan_of_run(context.instance, plan_run)
    if plan is None:
        raise dg.Failure(f"run {plan_run}, whose plan this run carries out, left no plan")
    return plan


def fresh_fingerprints(
    plan: dict[str, Any] | None, tables: list[Table], now: datetime
) -> dict[str, dict[str, dict[str, Any]]]:
    """The source fingerprints the plan's comparison read, per raw table, for its extraction to
    record rather than checksum the days again; none once they are older than
    `FINGERPRINTS_FRESH_FOR`."""
    if plan is None or "compared_at" not in plan:
        return {}
    if now - datetime.fromisoformat(plan["compared_at"]) > FINGERPRINTS_FRESH_FOR:
        return {}
    return {t.id: seen for t in tables if (seen := plan.get("fingerprints", {}).get(t.id))}


def _planned_days(
    context: AssetExecutionContext, tables: list[Table], plan: dict[str, Any] | None
) -> dict[str, tuple[date, ...]] | None:
    """The days (or periods) of each table a run of the nightly cycle works on: a daily
    run's, those of its plan; a KPI run's, the stale periods its tag lists. None: every one of
    the run's range, as for a backfill."""
    periods = periods_of_run(context.run.tags)
    if periods is not None:
        return {table.id: periods for table in tables}
    return planned_days(plan) if plan is not None else None


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


@contextmanager
def retrying(context: AssetExecutionContext) -> Iterator[None]:
    """A failure inside that goes away by itself (the source connection dropped, a Spark
    executor lost) requests a retry of the whole step after an exponential backoff (the step
    is idempotent: it replaces what it wrote); the error of the last try fails the run."""
    try:
        yield
    except Exception as error:
        if not is_transient(error):
            raise
        wait = RETRY_BASE_SECONDS * 2**context.retry_number
        context.log.warning(f"Transient failure, retrying in {wait} s: {error}")
        raise dg.RetryRequested(max_retries=MAX_RETRIES, seconds_to_wait=wait) from error


def with_retries(context: AssetExecutionContext, work: Callable[[], Result]) -> Result:
    """`work`, retried as `retrying` says (the whole multi-asset runs again)."""
    with retrying(context):
        return work()


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
