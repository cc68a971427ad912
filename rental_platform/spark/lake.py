"""Reading and writing catalogue tables in the Parquet lake.

Reads see the lake as of the newest commit when the step began (`manifest.py`): exactly the
files it names, never a version being written or one a failed step left behind. Writes go to a
new version folder of their own and stay invisible until the step commits them, all of a
step's tables in one commit: a step that dies, or whose blocking checks fail, changes nothing
that anyone reads. A write replaces whole partitions, never appends, so a re-run gives the same
result.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from rental_platform.spark import layout
from rental_platform.spark.manifest import (
    UNDATED,
    WHOLE,
    CommitLog,
    LakeState,
    Partition,
    TableChange,
    new_version,
    store_for,
    with_facts,
)
from rental_platform.tables import Grain, Table

# Where Spark keeps, in each Parquet file's footer, the schema it wrote the file with.
SPARK_SCHEMA_KEY = "org.apache.spark.sql.parquet.row.metadata"


@functools.cache
def spark_type(type_string: str) -> T.DataType:
    """A catalogue type as Spark's; parsed once per process (each parse is a JVM round trip)."""
    return T._parse_datatype_string(type_string)


def spark_schema(table: Table) -> T.StructType:
    return T.StructType([T.StructField(c.name, spark_type(c.type), True) for c in table.columns])


def conform(df: DataFrame, table: Table) -> DataFrame:
    """Exactly the catalogue's columns, in its order, with its types. As SQL text, in one call
    into the JVM: building each column's expression in Python takes several calls per column,
    and every read and write of the lake conforms."""
    return df.selectExpr(*[f"CAST(`{c.name}` AS {c.type}) AS `{c.name}`" for c in table.columns])


def period_of(table: Table) -> Column:
    """The expression that places a row in its partition."""
    column = F.col(table.partition_column)
    return F.to_date(column) if table.grain is Grain.DAILY else column


def _plain(value: Any) -> Any:
    """A value of a Spark row as JSON can hold it (a struct as a dict)."""
    return value.asDict(recursive=True) if isinstance(value, Row) else value


class Lake:
    """A lake root as one step sees it: the committed state when the step began, and what the
    step has written since, staged until it commits."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = root
        self.store = store_for(root)
        self.log = CommitLog(self.store)
        self.state: LakeState = self.log.head()
        self._staged: dict[str, dict[str, Partition]] = defaultdict(dict)
        self._table_facts: dict[str, dict[str, Any]] = defaultdict(dict)
        jvm = spark.sparkContext._jvm
        self._Path = jvm.org.apache.hadoop.fs.Path
        self._HadoopInputFile = jvm.org.apache.parquet.hadoop.util.HadoopInputFile
        self._ParquetFileReader = jvm.org.apache.parquet.hadoop.ParquetFileReader
        self._hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()

    # --- the committed state -----------------------------------------------------------------

    def partition(self, table: Table, key: str) -> Partition | None:
        """The committed version of one partition, if any."""
        return self.state.table(table.id).partitions.get(key)

    def table_facts(self, table: Table) -> dict[str, Any]:
        return dict(self.state.table(table.id).facts)

    def committed_periods(self, table: Table) -> list[date]:
        found = (layout.parse_period_key(key) for key in self.state.table(table.id).partitions)
        return sorted(period for period in found if period is not None)

    def committed_rows(self, table: Table, days: Iterable[date]) -> int:
        """The rows the lake holds for the given days: what the source held when they were
        extracted, so an estimate of what it holds now."""
        partitions = self.state.table(table.id).partitions
        found = (partitions.get(day.isoformat()) for day in days)
        return sum(partition.rows for partition in found if partition is not None)

    def read(self, table: Table, keys: Iterable[str] | None = None) -> DataFrame:
        """The committed rows of the table's partitions (every one, or those of `keys`)."""
        return self._read(table, self.state.files(table.id, keys))

    def read_snapshot(self, table: Table) -> DataFrame:
        return self.read(table, [WHOLE])

    def read_undated(self, table: Table) -> DataFrame:
        return self.read(table, [UNDATED])

    def read_periods(self, table: Table, start: date | None, end: date) -> DataFrame:
        """The committed partitions whose period starts in [start, end); start None reads
        from the first."""
        return self.read(table, [p.isoformat() for p in self.periods_in(table, start, end)])

    def periods_in(self, table: Table, start: date | None, end: date) -> list[date]:
        return [
            period
            for period in self.committed_periods(table)
            if (start is None or period >= start) and period < end
        ]

    def _read(self, table: Table, files: list[str]) -> DataFrame:
        """The rows of Parquet files, typed as the catalogue says."""
        if not files:
            # From an empty RDD, not an empty list: no Python worker is started for it.
            return self.spark.createDataFrame(
                self.spark.sparkContext.emptyRDD(), spark_schema(table)
            )
        return conform(self.spark.read.schema(spark_schema(table)).parquet(*files), table)

    # --- writing: staged until the step commits ----------------------------------------------

    def write_partitions(self, periods: int) -> int:
        """How many Spark partitions the rows of `periods` partitions are gathered into: no
        more than there are periods (a day's increment is one task), no more than the
        session's shuffle partitions."""
        return max(1, min(periods, int(self.spark.conf.get("spark.sql.shuffle.partitions"))))

    def stage_periods(
        self,
        df: DataFrame,
        table: Table,
        periods: Sequence[date],
        clustered: bool = False,
        per_period: dict[str, Column] | None = None,
    ) -> DataFrame:
        """Write a new version of each listed partition with the rows of `df` that fall in it;
        return what was written.

        Every listed period gets a new version, an empty one where `df` has no rows for it, so
        a re-run after the source lost rows does not leave stale ones behind. One file is
        written per partition: each Parquet file has a fixed cost, whatever its size. That
        takes a shuffle gathering each period's rows, unless `clustered` says they already are
        (no period's rows spread over two Spark partitions, as in a read split on day
        boundaries). The shuffle's partition count is fixed, so that adaptive execution does
        not merge a small table's hundreds of files into one task that writes them one by one.

        `per_period`: aggregates of each period's written rows to keep as facts of its
        partition (computed with the row counts, in one pass over what was written).
        """
        folder = self._new_folder(table)
        label = layout.PERIOD_PREFIX[table.grain]
        rows = conform(df, table).withColumn(label, period_of(table))
        if not clustered:
            rows = rows.repartition(self.write_partitions(len(periods)), label)
        rows.write.partitionBy(label).parquet(self.store.uri(folder))
        files = self._files_by_subfolder(folder)
        written = self._read(table, [self.store.uri(f) for names in files.values() for f in names])
        aggregates = per_period or {}
        summaries = {
            row["_period"].isoformat(): row
            for row in written.groupBy(period_of(table).alias("_period"))
            .agg(
                F.count(F.lit(1)).alias("_rows"),
                *[column.alias(name) for name, column in aggregates.items()],
            )
            .collect()
        }
        for period in periods:
            key = period.isoformat()
            subfolder = f"{folder}/{layout.period_label(table.grain, period)}"
            summary = summaries.get(key)
            self._staged[table.id][key] = Partition(
                subfolder,
                tuple(f.rsplit("/", 1)[1] for f in files.get(subfolder, [])),
                summary["_rows"] if summary else 0,
                {name: _plain(summary[name]) for name in aggregates} if summary else {},
            )
        return written

    def stage_snapshot(self, df: DataFrame, table: Table) -> DataFrame:
        return self._stage_whole(df, table, WHOLE)

    def stage_undated(self, df: DataFrame, table: Table) -> DataFrame:
        return self._stage_whole(df, table, UNDATED)

    def _stage_whole(self, df: DataFrame, table: Table, key: str) -> DataFrame:
        folder = self._new_folder(table)
        conform(df, table).coalesce(1).write.parquet(self.store.uri(folder))
        files = [f for f in self.store.list(folder) if f.endswith(".parquet")]
        written = self._read(table, [self.store.uri(f) for f in files])
        self._staged[table.id][key] = Partition(
            folder, tuple(f.rsplit("/", 1)[1] for f in files), written.count()
        )
        return written

    def _new_folder(self, table: Table) -> str:
        return f"{table.layer}/{table.name}/{new_version()}"

    def _files_by_subfolder(self, folder: str) -> dict[str, list[str]]:
        files: dict[str, list[str]] = defaultdict(list)
        for key in self.store.list(folder):
            if key.endswith(".parquet"):
                files[key.rsplit("/", 1)[0]].append(key)
        return files

    def staged(self, table: Table) -> dict[str, Partition]:
        """The partitions this step has written for the table, by key."""
        return self._staged.get(table.id, {})

    def add_facts(self, table: Table, key: str, **facts: Any) -> None:
        """Facts to commit with a staged partition (a fingerprint, the inputs' versions)."""
        self._staged[table.id][key] = with_facts(self._staged[table.id][key], **facts)

    def set_table_facts(self, table: Table, **facts: Any) -> None:
        """Facts about the whole table, committed with the step's partitions."""
        self._table_facts[table.id].update(facts)

    def stored_schema(self, table: Table) -> T.StructType | None:
        """The schema of the files the step wrote for `table`; None if it wrote no file. Read
        from the first file's footer, here on the driver: Spark's own schema inference runs a
        Spark job for that one footer."""
        for partition in self.staged(table).values():
            if partition.files:
                return self._written_schema(self.store.uri(partition.keys[0]))
        return None

    def _written_schema(self, file: str) -> T.StructType:
        """The Spark schema a Parquet file's writer stored in its footer."""
        input_file = self._HadoopInputFile.fromPath(self._Path(file), self._hadoop_conf)
        reader = self._ParquetFileReader.open(input_file)
        try:
            written = reader.getFileMetaData().getKeyValueMetaData().get(SPARK_SCHEMA_KEY)
        finally:
            reader.close()
        if written is None:  # not written by Spark: let Spark convert the Parquet schema
            return self.spark.read.parquet(file).schema
        return T.StructType.fromJson(json.loads(written))

    def staged_folders(self, tables: Iterable[Table]) -> list[str]:
        return sorted({self.store.uri(p.folder) for t in tables for p in self.staged(t).values()})

    def commit(self, tables: Iterable[Table], writer: str) -> int | None:
        """Make what the step staged for `tables` current, in one commit; the commit's number,
        or None if there was nothing to commit."""
        changes = {
            table.id: TableChange(
                self._staged.get(table.id, {}), self._table_facts.get(table.id, {})
            )
            for table in tables
            if table.id in self._staged or table.id in self._table_facts
        }
        if not changes:
            return None
        self.state = self.log.commit(changes, writer)
        return self.state.seq
