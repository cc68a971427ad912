"""Reading and writing catalogue tables in the Parquet lake.

Writes replace whole partitions (or a whole snapshot), never append, so a re-run gives the same
result. Each partition is written beside its old version and then swapped in by renames, so a
step that dies half-way leaves the previous version readable. File operations go through
Hadoop's FileSystem API, which is what Spark itself uses for local folders and `s3://` alike.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from datetime import date

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from rental_platform.spark import layout
from rental_platform.tables import Grain, Table

PERIOD = "_period"
# Where Spark keeps, in each Parquet file's footer, the schema it wrote the file with.
SPARK_SCHEMA_KEY = "org.apache.spark.sql.parquet.row.metadata"


@functools.cache
def spark_type(type_string: str) -> T.DataType:
    """A catalogue type as Spark's; parsed once per process (each parse is a JVM round trip)."""
    return T._parse_datatype_string(type_string)


def spark_schema(table: Table) -> T.StructType:
    return T.StructType([T.StructField(c.name, spark_type(c.type), True) for c in table.columns])


def conform(df: DataFrame, table: Table) -> DataFrame:
    """Exactly the catalogue's columns, in its order, with its types."""
    return df.select(*[F.col(c.name).cast(c.type).alias(c.name) for c in table.columns])


def period_of(table: Table) -> Column:
    """The expression that places a row in its partition."""
    column = F.col(table.partition_column)
    return F.to_date(column) if table.grain is Grain.DAILY else column


class Lake:
    """A lake root as seen from one SparkSession."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = root
        jvm = spark.sparkContext._jvm
        self._Path = jvm.org.apache.hadoop.fs.Path
        self._FileUtil = jvm.org.apache.hadoop.fs.FileUtil
        self._ArrayUtils = jvm.org.apache.commons.lang3.ArrayUtils
        self._HadoopInputFile = jvm.org.apache.parquet.hadoop.util.HadoopInputFile
        self._ParquetFileReader = jvm.org.apache.parquet.hadoop.ParquetFileReader
        self._hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
        self._fs = self._Path(root).getFileSystem(self._hadoop_conf)

    # --- reading -----------------------------------------------------------------------------

    def read_snapshot(self, table: Table) -> DataFrame:
        return self._read_paths(table, [layout.table_path(self.root, table)])

    def read_undated(self, table: Table) -> DataFrame:
        return self._read_paths(table, [layout.undated_path(self.root, table)])

    def read_periods(self, table: Table, start: date | None, end: date) -> DataFrame:
        """The partitions whose period starts in [start, end); start None reads from the first.

        A partition folder may hold no file (a period without rows): with the catalogue's
        schema given, Spark reads it as no rows, so the folders are not listed one by one."""
        paths = [
            layout.period_path(self.root, table, period)
            for period in self.existing_periods(table)
            if (start is None or period >= start) and period < end
        ]
        return self._read(table, paths)

    def existing_periods(self, table: Table) -> list[date]:
        found = (
            layout.parse_period_label(table.grain, name)
            for name in self._names_in(layout.table_path(self.root, table))
        )
        return sorted(period for period in found if period is not None)

    def _read_paths(self, table: Table, paths: list[str]) -> DataFrame:
        return self._read(table, [path for path in paths if self._has_parquet(path)])

    def _read(self, table: Table, paths: list[str]) -> DataFrame:
        """The rows of the Parquet files under `paths`, typed as the catalogue says."""
        if not paths:
            # From an empty RDD, not an empty list: no Python worker is started for it.
            return self.spark.createDataFrame(
                self.spark.sparkContext.emptyRDD(), spark_schema(table)
            )
        return conform(self.spark.read.schema(spark_schema(table)).parquet(*paths), table)

    def stored_schema(self, paths: list[str]) -> T.StructType | None:
        """The schema the Parquet files under `paths` (folders) were written with; None if
        they hold no file. It is read from the first file's footer, here on the driver:
        Spark's own schema inference runs a Spark job for that one footer."""
        for path in paths:
            files = self._parquet_files(path)
            if files:
                return self._written_schema(f"{path.rstrip('/')}/{files[0]}")
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

    def _has_parquet(self, path: str) -> bool:
        return bool(self._parquet_files(path))

    def _parquet_files(self, path: str) -> list[str]:
        return sorted(name for name in self._names_in(path) if name.endswith(".parquet"))

    def _names_in(self, path: str) -> list[str]:
        """The names in a folder (none if it does not exist), in a few JVM round trips however
        many there are: one per name made years of day folders cost thousands.

        The JVM renders the listing as `{folder/a,folder/b}`; splitting on `,folder/` holds
        whatever the folder's own name contains."""
        hadoop_path = self._Path(path)
        if not self._fs.exists(hadoop_path):
            return []
        folder = self._fs.makeQualified(hadoop_path).toString().rstrip("/") + "/"
        listing = self._ArrayUtils.toString(
            self._FileUtil.stat2Paths(self._fs.listStatus(hadoop_path))
        )
        body = listing.removeprefix("{").removesuffix("}")
        if not body:
            return []
        if not body.startswith(folder):
            raise OSError(f"unexpected listing of {folder}: {listing[:200]}")
        return body.removeprefix(folder).split("," + folder)

    # --- writing -----------------------------------------------------------------------------

    def write_partitions(self, periods: int) -> int:
        """How many Spark partitions the rows of `periods` partitions are gathered into: no
        more than there are periods (a day's increment is one task), no more than the
        session's shuffle partitions."""
        return max(1, min(periods, int(self.spark.conf.get("spark.sql.shuffle.partitions"))))

    def write_snapshot(self, df: DataFrame, table: Table) -> None:
        self._write_snapshot_to(df, table, layout.table_path(self.root, table))

    def write_undated(self, df: DataFrame, table: Table) -> None:
        self._write_snapshot_to(df, table, layout.undated_path(self.root, table))

    def write_periods(
        self, df: DataFrame, table: Table, periods: Sequence[date], clustered: bool = False
    ) -> None:
        """Replace each listed partition with the rows of `df` that fall in it.

        Every listed period is replaced, with an empty partition where `df` has no rows for it,
        so a re-run after the source lost rows does not leave stale ones behind. One file is
        written per partition: each Parquet file has a fixed cost, whatever its size. That
        takes a shuffle gathering each period's rows, unless `clustered` says they already are
        (no period's rows spread over two Spark partitions, as in a read split on day
        boundaries). The shuffle's partition count is fixed, so that adaptive execution does
        not merge a small table's hundreds of files into one task that writes them one by one.
        """
        base = layout.table_path(self.root, table)
        staging = f"{base}/_staging/{uuid.uuid4().hex}"
        rows = conform(df, table).withColumn(PERIOD, period_of(table))
        if not clustered:
            rows = rows.repartition(self.write_partitions(len(periods)), PERIOD)
        rows.write.partitionBy(PERIOD).parquet(staging)
        for period in periods:
            staged = self._Path(f"{staging}/{PERIOD}={period.isoformat()}")
            if not self._fs.exists(staged):
                self._fs.mkdirs(staged)
            self._swap_in(staged, self._Path(layout.period_path(self.root, table, period)))
        self._fs.delete(self._Path(f"{base}/_staging"), True)

    def _write_snapshot_to(self, df: DataFrame, table: Table, path: str) -> None:
        staging = f"{path}_staging_{uuid.uuid4().hex}"
        conform(df, table).coalesce(1).write.parquet(staging)
        self._swap_in(self._Path(staging), self._Path(path))

    def _swap_in(self, staged, final) -> None:  # py4j Hadoop Path objects
        """Move the old version aside, the new one in, then drop the old one."""
        trash = self._Path(f"{final.toString()}_trash_{uuid.uuid4().hex}")
        had_old = self._fs.exists(final)
        if had_old:
            self._fs.rename(final, trash)
        else:
            self._fs.mkdirs(final.getParent())
        if not self._fs.rename(staged, final):
            if had_old:
                self._fs.rename(trash, final)
            raise OSError(f"could not move {staged.toString()} to {final.toString()}")
        if had_old:
            self._fs.delete(trash, True)
