"""The local instance's batching event log stores what Dagster's own SQLite event log stores:
the same events in the same order, the same materialised and failed partitions, the same check
executions; in a writer thread that the caller does not wait for, but every reader and every
run's end does."""

import gc
import shutil
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster import AssetExecutionContext
from dagster._core.events import (
    DagsterEvent,
    DagsterEventBatchMetadata,
    DagsterEventType,
    EngineEventData,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
from dagster._core.utils import make_new_run_id
from dagster_shared.serdes import deserialize_value
from sqlalchemy.exc import OperationalError

from rental_platform.event_batching import BATCH_SIZE_VARIABLE
from rental_platform.local import event_log
from rental_platform.local.event_log import BatchingSqliteEventLogStorage, BatchingSqliteStorage
from rental_platform_tests.chaos import refusing_writes
from rental_platform_tests.harness import LOCAL_INSTANCE

pytestmark = pytest.mark.fast

DAYS = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_date="2025-01-21")
TABLES = ("first", "second", "third")
FAILING_DAY = "2025-01-07"
RANGE = {
    "dagster/asset_partition_range_start": "2025-01-01",
    "dagster/asset_partition_range_end": "2025-01-20",
}


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)
    DAILY_CHECKS = [
        dg.AssetCheckSpec("each_day", asset=name, partitions_def=DAYS, blocking=True)
        for name in TABLES
    ]
CHECKS = [dg.AssetCheckSpec("rows", asset=name) for name in TABLES] + DAILY_CHECKS


@dg.multi_asset(
    specs=[dg.AssetSpec(name) for name in TABLES],
    check_specs=CHECKS,
    partitions_def=DAYS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    config_schema={"fail": bool},
)
def three_daily_tables(context: AssetExecutionContext):
    """Like a platform step: a range in one run, a materialisation per table, a check of the
    range and a check per day (one day failing) per table."""
    if context.op_execution_context.op_config["fail"]:
        raise RuntimeError("the step failed")
    for name in TABLES:
        yield dg.MaterializeResult(asset_key=name, metadata={"rows": 1})
    for name in TABLES:
        yield dg.AssetCheckResult(asset_key=name, check_name="rows", passed=True)
    for spec in DAILY_CHECKS:
        for day in context.partition_keys:
            yield dg.AssetCheckEvaluation(
                asset_key=spec.asset_key,
                check_name=spec.name,
                passed=day != FAILING_DAY,
                blocking=True,
                severity=dg.AssetCheckSeverity.WARN,  # so that the run goes on
                partition=day,
            )
        name = context.assets_def.get_output_name_for_asset_check_key(spec.key)
        yield dg.Output(None, output_name=name)


def _run(instance: dg.DagsterInstance, fail: bool) -> str:
    job = dg.Definitions(
        assets=[three_daily_tables], jobs=[dg.define_asset_job("days", selection=list(TABLES))]
    ).resolve_job_def("days")
    config = {"ops": {"three_daily_tables": {"config": {"fail": fail}}}}
    return job.execute_in_process(
        run_config=config, instance=instance, tags=RANGE, raise_on_error=False
    ).run_id


def _stored(instance: dg.DagsterInstance, run_ids: list[str]) -> dict:
    """What the UI reads back: each run's events, and per table its partitions' status."""
    events = [
        (
            entry.dagster_event.event_type_value,
            entry.dagster_event.asset_key,
            entry.dagster_event.partition,
        )
        for run_id in run_ids
        for entry in instance.all_logs(run_id)
        if entry.is_dagster_event and entry.dagster_event.event_type_value != "ENGINE_EVENT"
    ]
    partitions, latest = {}, {}
    for name in TABLES:
        key = dg.AssetKey(name)
        status = get_and_update_asset_status_cache_value(instance, key, DAYS)
        partitions[name] = (
            sorted(instance.get_materialized_partitions(key)),
            # The tags indexed per materialisation: their names (a data version is random).
            sorted(tuple(sorted(tags)) for tags in instance.get_event_tags_for_asset(key)),
            sorted(status.deserialize_failed_partition_subsets(DAYS).get_partition_keys()),
        )
        # The asset's row in the index: its latest materialisation and planned event.
        (record,) = instance.get_asset_records([key])
        entry = record.asset_entry
        materialized = entry.last_materialization_record
        latest[name] = (
            materialized and (materialized.storage_id, materialized.partition_key),
            entry.last_run_id and run_ids.index(entry.last_run_id),
            entry.last_planned_materialization_storage_id,
            entry.last_planned_materialization_run_id,
        )
    return {
        "events": events,
        "partitions": partitions,
        "latest": latest,
        "checks": _check_executions(instance, run_ids),
        "check_rows": _check_execution_rows(instance, run_ids),
    }


def _check_executions(instance: dg.DagsterInstance, run_ids: list[str]) -> list[tuple]:
    """Every check's executions, as the UI lists them: run, partition, status, evaluation."""
    storage = instance.event_log_storage
    return [
        (
            spec.key.to_user_string(),
            run_ids.index(record.run_id),
            record.partition,
            record.status.value,
            getattr(record.event.dagster_event.event_specific_data, "passed", None),
        )
        for spec in CHECKS
        for record in storage.get_asset_check_execution_history(spec.key, limit=1000)
    ]


def _check_execution_rows(instance: dg.DagsterInstance, run_ids: list[str]) -> list[tuple]:
    """The index's check execution records, column by column: which evaluation and which
    materialisation each points at (storage ids), and the evaluation it holds."""
    table = AssetCheckExecutionsTable
    columns = (
        table.c.asset_key,
        table.c.check_name,
        table.c.run_id,
        table.c.partition,
        table.c.execution_status,
        table.c.evaluation_event_storage_id,
        table.c.materialization_event_storage_id,
        table.c.evaluation_event,
    )
    with instance.event_log_storage.index_connection() as connection:
        rows = connection.execute(sa.select(*columns).order_by(table.c.id)).all()
    return [
        (*row[:2], run_ids.index(row[2]), *row[3:7], row[7] and _evaluated(row[7], run_ids))
        for row in rows
    ]


def _evaluated(serialized: str, run_ids: list[str]) -> tuple:
    """What a stored event (a check's evaluation, or its plan) says, without its time."""
    entry = deserialize_value(serialized, EventLogEntry)
    data = entry.dagster_event.event_specific_data
    return (
        run_ids.index(entry.run_id),
        entry.dagster_event.event_type_value,
        data.asset_key,
        data.check_name,
        getattr(data, "partition", None),
        getattr(data, "passed", None),
    )


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Iterator[Path]:
    """An instance home with the repository's dagster.yaml; the batch-size variable is put
    back as it was afterwards (the storage sets it)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(LOCAL_INSTANCE, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv(BATCH_SIZE_VARIABLE, "unset by the fixture")
    monkeypatch.delenv(BATCH_SIZE_VARIABLE)
    yield home


def test_the_batching_log_stores_what_dagsters_own_stores(dagster_home, monkeypatch) -> None:
    batched: list[int] = []
    # Per check event stored, the size of the batch it was stored in (0: on its own).
    checks_batched: list[int] = []
    storing: list[int] = [0]
    store_together = BatchingSqliteEventLogStorage._store_together
    store_check = BatchingSqliteEventLogStorage.store_asset_check_event

    def counting(storage, events):
        batched.append(len(events))
        storing[0] = len(events)
        try:
            store_together(storage, events)
        finally:
            storing[0] = 0

    def counting_checks(storage, event, event_id):
        checks_batched.append(storing[0])
        store_check(storage, event, event_id)

    monkeypatch.setattr(BatchingSqliteEventLogStorage, "_store_together", counting)
    monkeypatch.setattr(BatchingSqliteEventLogStorage, "store_asset_check_event", counting_checks)
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.get_ref().storage, BatchingSqliteStorage)
        # A failed try, then a good one: failed partitions, then materialised ones.
        batching = _stored(instance, [_run(instance, fail=True), _run(instance, fail=False)])
    with dg.instance_for_test() as instance:  # Dagster's default SQLite storage
        default = _stored(instance, [_run(instance, fail=True), _run(instance, fail=False)])

    assert batching == default
    days = DAYS.get_partition_keys()
    assert default["partitions"]["first"][0] == days
    assert default["partitions"]["first"][2] == []
    assert len(default["partitions"]["first"][1]) == len(days)
    assert default["latest"]["first"][0][1] == days[-1]
    planned = [e for e in default["events"] if e[0] == "ASSET_MATERIALIZATION_PLANNED"]
    assert len(planned) == 2 * len(TABLES) * len(days)
    # The planned events and the materialisations went through in batches, not one by one.
    assert max(batched) >= len(TABLES) * len(days)
    assert sum(batched) >= 2 * len(TABLES) * len(days) + len(TABLES) * len(days)
    # Each partition's check result; the evaluations were stored together, not one by one.
    daily = [c for c in default["checks"] if c[0].endswith(":each_day") and c[1] == 1]
    assert sorted((c[2], c[4]) for c in daily if c[0] == "first:each_day") == [
        (day, day != FAILING_DAY) for day in days
    ]
    assert max(checks_batched) >= len(DAILY_CHECKS) * len(days)


def _unplanned_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[tuple]:
    """Evaluations of partitions no run planned (as a step launcher's instance reports them),
    stored in one batch: the index's execution records afterwards."""

    def entry(event: DagsterEvent) -> EventLogEntry:
        return EventLogEntry(None, "DEBUG", "", run_id, time.time(), dagster_event=event)

    evaluations = [
        DagsterEvent(
            DagsterEventType.ASSET_CHECK_EVALUATION.value,
            "days",
            event_specific_data=dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("first"),
                check_name="each_day",
                passed=day != FAILING_DAY,
                partition=day,
            ),
        )
        for day in DAYS.get_partition_keys()
    ]
    # A run's evaluations are held until its next event, then stored with it.
    done = DagsterEvent(
        DagsterEventType.ENGINE_EVENT.value,
        "days",
        event_specific_data=EngineEventData(),
        message="done",
    )
    instance.event_log_storage.store_event_batch([*map(entry, evaluations), entry(done)])
    return _check_execution_rows(instance, [run_id])


def test_an_evaluation_no_run_planned_gets_a_record_as_in_dagsters_log(dagster_home) -> None:
    run_id = make_new_run_id()
    with dg.DagsterInstance.get() as instance:
        batching = _unplanned_evaluations(instance, run_id)
    with dg.instance_for_test() as instance:
        default = _unplanned_evaluations(instance, run_id)
    assert batching == default
    assert [(row[3], row[4]) for row in default] == [
        (day, "SUCCEEDED" if day != FAILING_DAY else "FAILED") for day in DAYS.get_partition_keys()
    ]


def test_a_failed_run_leaves_its_partitions_failed(dagster_home) -> None:
    with dg.DagsterInstance.get() as instance:
        stored = _stored(instance, [_run(instance, fail=True)])
    assert stored["partitions"]["second"] == ([], [], DAYS.get_partition_keys())


def test_an_engine_serves_each_database_and_the_ui_still_sees_new_events(
    dagster_home, monkeypatch
) -> None:
    engines: list[str] = []
    create_engine = event_log.create_engine

    def counting(url, **kwargs):
        engines.append(str(url))
        return create_engine(url, **kwargs)

    monkeypatch.setattr(event_log, "create_engine", counting)
    with dg.DagsterInstance.get() as instance:
        run_ids = [_run(instance, fail=True), _run(instance, fail=False)]
        # An engine per database (the index and each run's), however many events were stored.
        assert sorted(engines) == sorted(set(engines))
        assert len(engines) == len(run_ids) + 1
        assert len(instance.all_logs(run_ids[1])) > len(engines)

        # The UI follows a run by watching its database file for changes: each write must
        # still reach the file, not linger in a connection's write-ahead log.
        seen = threading.Event()
        storage = instance.event_log_storage
        storage.watch(run_ids[1], None, lambda entry, cursor: seen.set())
        instance.report_engine_event(
            "a new event for the watcher", dagster_run=instance.get_run_by_id(run_ids[1])
        )
        assert seen.wait(timeout=10)


def test_a_database_s_lock_is_kept_only_while_a_thread_uses_it(dagster_home) -> None:
    """A daemon opens the databases of thousands of runs: their locks must not pile up."""
    with dg.DagsterInstance.get() as instance:
        run_ids = [_run(instance, fail=False) for _ in range(3)]
        assert all(instance.all_logs(run_id) for run_id in run_ids)
        gc.collect()
        assert len(instance.event_log_storage._shard_locks) == 0


def test_the_index_schema_is_probed_once_per_table_and_column(dagster_home, monkeypatch) -> None:
    """Dagster asks, for every asset event, whether the tags table and the asset key table's
    newer columns exist, and for every check event whether the check executions table does;
    the batching log asks the database once, and keeps the yes."""
    from sqlalchemy.dialects.sqlite.base import SQLiteDialect
    from sqlalchemy.engine.reflection import Inspector

    tables_asked: list[str] = []
    columns_asked: list[str] = []
    has_table, get_columns = SQLiteDialect.has_table, Inspector.get_columns

    def counting_tables(dialect, connection, table_name, *args, **kwargs):
        tables_asked.append(table_name)
        return has_table(dialect, connection, table_name, *args, **kwargs)

    def counting_columns(inspector, table_name, *args, **kwargs):
        columns_asked.append(table_name)
        return get_columns(inspector, table_name, *args, **kwargs)

    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        monkeypatch.setattr(SQLiteDialect, "has_table", counting_tables)
        monkeypatch.setattr(Inspector, "get_columns", counting_columns)
        run_ids = [_run(instance, fail=False), _run(instance, fail=False)]
        events = sum(len(instance.all_logs(run_id)) for run_id in run_ids)
        assert storage.has_table("asset_event_tags")
        assert not storage.has_table("no_such_table")
        assert not storage.has_table("no_such_table")
    # Hundreds of asset events stored; the tags table and the asset key columns asked about
    # only as each database is set up (the index, then each run's), a no asked again.
    assert events > 100 * len(TABLES)
    assert tables_asked.count("asset_event_tags") <= 1 + len(run_ids)
    assert tables_asked.count("asset_check_executions") <= 1 + len(run_ids)
    assert columns_asked.count("asset_keys") <= len(run_ids)
    assert tables_asked.count("no_such_table") == 2


def _slot_taken_and_given_back(
    instance: dg.DagsterInstance, run: dg.DagsterRun, release: threading.Event
) -> None:
    """With the writer held up until `release`, a step of `run` takes a `lake` slot and gives
    it back, in a thread of its own, without waiting; once released, the event handed over
    before ("stored while the step runs") is stored."""
    storage = instance.event_log_storage
    claimed: list = []

    def take_and_give_back() -> None:
        storage.initialize_concurrency_limit_to_default("lake")
        claimed.append(storage.claim_concurrency_slot("lake", run.run_id, "step"))
        storage.free_concurrency_slot_for_step(run.run_id, "step")

    slot = threading.Thread(target=take_and_give_back)
    slot.start()
    slot.join(timeout=10)
    without_waiting = not slot.is_alive()
    release.set()
    slot.join()
    assert without_waiting
    assert claimed[0].is_claimed
    assert instance.all_logs(run.run_id)[-1].message == "stored while the step runs"


def test_the_caller_does_not_wait_for_the_writer_but_a_reader_does(
    dagster_home, monkeypatch
) -> None:
    """While the writer is busy (held here until released), handing over an event returns at
    once; a read waits until the event is stored, and finds it."""
    writing, release = threading.Event(), threading.Event()
    store_together = BatchingSqliteEventLogStorage._store_together

    def held_up(storage, events):
        writing.set()
        assert release.wait(timeout=60)
        store_together(storage, events)

    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(_run(instance, fail=False))
        monkeypatch.setattr(BatchingSqliteEventLogStorage, "_store_together", held_up)
        reported = threading.Thread(target=instance.report_engine_event, args=("handed over", run))
        reported.start()
        reported.join(timeout=10)
        handed_over_at_once = not reported.is_alive()
        assert writing.wait(timeout=10)
        release.set()
        reported.join()
        assert handed_over_at_once
        assert instance.all_logs(run.run_id)[-1].message == "handed over"


def test_a_step_takes_and_gives_back_its_pool_slot_without_waiting_for_the_writer(
    dagster_home, monkeypatch
) -> None:
    """Dagster claims a step's slot of its pool (the `lake` pool) as the step starts and frees
    it as it ends: that touches the slots, not events, so it does not wait for the writer, and
    the next step starts while the last one's events are stored."""
    release = threading.Event()
    store_together = BatchingSqliteEventLogStorage._store_together

    def held_up(storage, events):
        assert release.wait(timeout=60)
        store_together(storage, events)

    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(_run(instance, fail=False))
        monkeypatch.setattr(BatchingSqliteEventLogStorage, "_store_together", held_up)
        instance.report_engine_event("stored while the step runs", dagster_run=run)
        _slot_taken_and_given_back(instance, run, release)


def test_a_pool_slot_is_claimed_while_the_writer_holds_a_runs_database(
    dagster_home, monkeypatch
) -> None:
    """The writer storing a run's events holds that run's database, not the index, where the
    pool's slots are: a step claims and frees its slot meanwhile."""
    writing, release = threading.Event(), threading.Event()
    store_together = BatchingSqliteEventLogStorage._store_together

    def held_up_in_the_runs_database(storage, events):
        with storage.run_connection(events[0].run_id):
            writing.set()
            assert release.wait(timeout=60)
        store_together(storage, events)

    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(_run(instance, fail=False))
        monkeypatch.setattr(
            BatchingSqliteEventLogStorage, "_store_together", held_up_in_the_runs_database
        )
        instance.report_engine_event("stored while the step runs", dagster_run=run)
        assert writing.wait(timeout=10)
        _slot_taken_and_given_back(instance, run, release)


def test_a_run_seen_ended_has_all_its_events_stored(dagster_home, monkeypatch) -> None:
    """A slow writer: still, once a run has ended, another instance on the same storage (the
    UI's, the daemon's) finds every event of it, its materialisations and checks included."""
    store_together = BatchingSqliteEventLogStorage._store_together

    def slow(storage, events):
        time.sleep(0.2)
        store_together(storage, events)

    with dg.DagsterInstance.get() as instance:
        monkeypatch.setattr(BatchingSqliteEventLogStorage, "_store_together", slow)
        run_id = _run(instance, fail=False)
        with dg.DagsterInstance.get() as other:
            assert other.get_run_by_id(run_id).is_success
            stored = other.event_log_storage.get_records_for_run(run_id, limit=10_000).records
            planned = [
                r
                for r in stored
                if r.event_log_entry.dagster_event_type
                == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
            ]
            materialized = other.get_materialized_partitions(dg.AssetKey("first"))
            checks = _check_executions(other, [run_id])
        assert stored[-1].event_log_entry.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS
        assert len(planned) == len(TABLES) * len(DAYS.get_partition_keys())
        assert sorted(materialized) == DAYS.get_partition_keys()
        daily = [c for c in checks if c[0] == "first:each_day"]
        assert sorted((c[2], c[4]) for c in daily) == [
            (day, day != FAILING_DAY) for day in DAYS.get_partition_keys()
        ]


def test_what_the_writer_fails_to_store_is_raised_where_it_is_waited_for(dagster_home) -> None:
    """The event log's folder refuses new files (a transaction's journal) while an event is
    handed over: handing over still returns, and waiting for the writer, as every reader and
    every run's end does first, raises the database's error. Once the folder takes writes
    again, the log stores and reads as before; the refused event is not there."""
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(_run(instance, fail=False))
        storage = instance.event_log_storage
        with refusing_writes(dagster_home / "history" / "runs"):
            instance.report_engine_event("refused", dagster_run=run)
            with pytest.raises(OperationalError):
                storage._wait_for_writer()
        instance.report_engine_event("stored", dagster_run=run)
        messages = [entry.message for entry in instance.all_logs(run.run_id)]
    assert messages[-1] == "stored"
    assert "refused" not in messages


def test_a_run_whose_database_refuses_writes_loses_no_other_run_s_events(dagster_home) -> None:
    """One run's database refuses writes while the writer stores, in one pass, an event of
    that run and then one of another run: the other run's event is stored, and the refusal is
    raised where the writer is next waited for."""
    with dg.DagsterInstance.get() as instance:
        refusing, other = (instance.get_run_by_id(_run(instance, fail=False)) for _ in "ab")
        storage = instance.event_log_storage
        events = [
            dg.EventLogEntry(None, "INFO", "to the refusing run", refusing.run_id, time.time()),
            dg.EventLogEntry(None, "INFO", "to the other run", other.run_id, time.time()),
        ]
        with refusing_writes(dagster_home / "history" / "runs" / f"{refusing.run_id}.db"):
            storage.store_event_batch(events)  # one hand-over: the writer's one pass
            with pytest.raises(OperationalError, match="readonly"):
                storage._wait_for_writer()
        refused = [entry.user_message for entry in instance.all_logs(refusing.run_id)]
        stored = [entry.user_message for entry in instance.all_logs(other.run_id)]
    assert stored[-1] == "to the other run"
    assert "to the refusing run" not in refused


def test_a_batch_ending_a_run_after_a_refused_write_is_stored_once(dagster_home) -> None:
    """The writer fails to store an event; Dagster then hands over a batch that ends a run. Had
    handing it over raised the earlier failure, Dagster would store the batch again, event by
    event (its fallback): twice. It is stored once, and the failure is raised to the next
    reader instead."""
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(_run(instance, fail=False))
        ended = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)[-1]
        with refusing_writes(dagster_home / "history" / "runs"):
            instance.report_engine_event("refused", dagster_run=run)
            # The writer has tried, while the folder refuses; its failure kept for later.
            instance.event_log_storage._wait_for_writer(raise_error=False)
        message = dg.EventLogEntry(None, "INFO", "batched", run.run_id, time.time())
        batch = [message, ended]
        for position, entry in enumerate(batch):
            instance.handle_new_event(
                entry, batch_metadata=DagsterEventBatchMetadata("b", position == len(batch) - 1)
            )
        with pytest.raises(OperationalError):
            instance.all_logs(run.run_id)
        entries = instance.all_logs(run.run_id)
    messages = [entry.user_message for entry in entries]
    assert messages.count("batched") == 1
    assert "refused" not in messages
    successes = [e for e in entries if e.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS]
    assert len(successes) == 2  # the run's own, and the batch's
