"""The local Spark JVM's options: the quick compiler, the class-data archive only when one
was built for this Java and these Spark jars, and the java.nio local file system, each part
switchable off; and a cluster's session, which keeps the cluster's own."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import date
from pathlib import Path

import pyspark
import pytest

from rental_platform import local
from rental_platform.contract import MARIADB_JDBC_JAR, StepRequest
from rental_platform.cycle_tags import Cycle
from rental_platform.local.file_system import FILE_SYSTEM_CLASS, file_system_jar
from rental_platform.local.jvm import (
    QUICK_COMPILER_MAX_DAYS,
    QUICK_COMPILER_OPTION,
    class_archive_path,
    tuning_conf,
)
from rental_platform.local.session import local_session
from rental_platform.resources.spark import session_days
from rental_platform.spark.session import LOCAL_JAVA_OPTIONS, LOCAL_MASTER, session_conf


def _java_options(conf: dict[str, str]) -> list[str]:
    return conf.get("spark.driver.extraJavaOptions", "").split()


def _run_script(folder: Path, text: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`text` run as a Python script of its own: a process whose JVM this test starts."""
    script = folder / "script.py"
    script.write_text(text)
    return subprocess.run(
        [sys.executable, str(script), *arguments], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def archive_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RENTAL_CLASS_ARCHIVE_DIR", str(tmp_path))
    return tmp_path


def test_the_archive_is_used_once_built_unless_switched_off(archive_dir: Path) -> None:
    archive = class_archive_path()
    assert archive.parent == archive_dir
    assert not any(o.startswith("-XX:SharedArchiveFile") for o in _java_options(tuning_conf()))
    archive.write_bytes(b"")
    assert f"-XX:SharedArchiveFile={archive}" in _java_options(tuning_conf())
    off = _java_options(tuning_conf(off={local.CLASS_ARCHIVE}))
    assert not any(option.startswith("-XX:SharedArchiveFile") for option in off)


def test_training_writes_the_archive_instead_of_reading_it(archive_dir: Path) -> None:
    class_archive_path().write_bytes(b"")
    options = _java_options(tuning_conf(archiving_to=archive_dir / "new.jsa"))
    assert f"-XX:ArchiveClassesAtExit={archive_dir / 'new.jsa'}" in options
    assert not any(option.startswith("-XX:SharedArchiveFile") for option in options)


def test_an_archive_of_other_jars_is_not_used(
    archive_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path_factory.mktemp("pyspark")
    (package / "jars").mkdir()
    jar = package / "jars" / "spark-core.jar"
    jar.write_bytes(b"one")
    monkeypatch.setattr(pyspark, "__file__", str(package / "__init__.py"))
    before = class_archive_path()
    jar.write_bytes(b"upgraded")
    assert class_archive_path() != before


def test_the_local_session_runs_with_the_local_options() -> None:
    conf = local_session().conf.get("spark.driver.extraJavaOptions")
    assert conf.startswith("-Duser.timezone=UTC")
    assert all(option in conf.split() for option in LOCAL_JAVA_OPTIONS)


def test_the_tests_jvm_maps_the_archive_make_setup_built() -> None:
    assert class_archive_path().is_file(), "no class-data archive: run `make setup`"
    jvm = local_session().sparkContext._jvm
    diagnostics = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    )
    assert diagnostics.getVMOption("SharedArchiveFile").getValue() == str(class_archive_path())


def test_the_local_session_sets_permissions_without_a_chmod_process(tmp_path: Path) -> None:
    """make setup compiles the java.nio file system; the session writes through it, and files
    and folders get the modes Hadoop's own file system gives them."""
    assert file_system_jar().is_file(), "no local file system jar: run `make setup`"
    spark = local_session()
    jvm = spark.sparkContext._jvm
    file_system = jvm.org.apache.hadoop.fs.FileSystem.get(
        jvm.java.net.URI("file:///"), spark.sparkContext._jsc.hadoopConfiguration()
    )
    assert file_system.getClass().getName() == FILE_SYSTEM_CLASS
    table = tmp_path / "table"
    spark.range(4).selectExpr("id", "id % 2 AS p").write.partitionBy("p").parquet(str(table))
    files = list(table.rglob("*.parquet"))
    assert len(files) >= 2
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o644}
    assert {stat.S_IMODE(d.stat().st_mode) for d in table.glob("p=*")} == {0o755}


def test_what_a_user_adds_extends_the_local_sessions_lists() -> None:
    """RENTAL_SPARK_CONF with hadoop-aws and a Java option: the JDBC driver, the local file
    system's jar and the UTC option stay."""
    conf = session_conf(
        LOCAL_MASTER,
        tuning_conf(),
        {
            "spark.jars": "/opt/hadoop-aws.jar",
            "spark.driver.extraClassPath": "/opt/extra",
            "spark.driver.extraJavaOptions": "-Dextra=1",
            "spark.sql.shuffle.partitions": "7",
        },
    )
    assert conf["spark.jars"].split(",") == [MARIADB_JDBC_JAR, "/opt/hadoop-aws.jar"]
    assert conf["spark.driver.extraClassPath"].split(os.pathsep) == [
        str(file_system_jar()),
        "/opt/extra",
    ]
    assert _java_options(conf)[: len(LOCAL_JAVA_OPTIONS)] == list(LOCAL_JAVA_OPTIONS)
    assert _java_options(conf)[-1] == "-Dextra=1"
    assert conf["spark.hadoop.fs.file.impl"] == FILE_SYSTEM_CLASS
    assert conf["spark.sql.shuffle.partitions"] == "7"


def test_the_file_system_switched_off_leaves_hadoops_own() -> None:
    """Its jar stays on the class path, as the class-data archive was built with it there."""
    conf = session_conf(LOCAL_MASTER, tuning_conf(off={local.FILE_SYSTEM}))
    assert "spark.hadoop.fs.file.impl" not in conf
    assert conf["spark.driver.extraClassPath"] == str(file_system_jar())


def test_only_a_local_session_leaves_its_shuffles_uncompressed() -> None:
    """On one machine shuffle files never cross a network; on a cluster they do, so Glue's and
    EMR's setting stands. Spills stay compressed either way."""
    spark = local_session()
    assert spark.sparkContext.getConf().get("spark.shuffle.compress") == "false"
    assert spark.sparkContext.getConf().get("spark.shuffle.spill.compress") is None
    assert "spark.shuffle.compress" not in session_conf(None)


def test_a_remote_session_takes_the_callers_jars_as_given() -> None:
    conf = session_conf(None, {"spark.jars": "s3://bucket/jars/extra.jar"})
    assert conf["spark.jars"] == "s3://bucket/jars/extra.jar"
    assert "spark.hadoop.fs.file.impl" not in conf


def test_a_remote_session_leaves_the_clusters_java_options_alone() -> None:
    """Glue and EMR put their own GC, logging and out-of-memory options there: replacing them
    would drop those. Executors get UTC from their environment instead."""
    conf = session_conf(None)
    assert not [key for key in conf if key.endswith("extraJavaOptions")]
    assert conf["spark.executorEnv.TZ"] == "UTC"


def test_a_long_range_gets_both_compilers_and_a_short_one_c1_alone() -> None:
    """C1 alone warms up sooner for an increment; C2's code pays off over a year of rows."""
    assert QUICK_COMPILER_OPTION in _java_options(tuning_conf())
    assert QUICK_COMPILER_OPTION in _java_options(tuning_conf(days=1))
    assert QUICK_COMPILER_OPTION in _java_options(tuning_conf(days=QUICK_COMPILER_MAX_DAYS))
    assert QUICK_COMPILER_OPTION not in _java_options(tuning_conf(days=365))
    off = tuning_conf(off={local.QUICK_COMPILER}, days=1)
    assert QUICK_COMPILER_OPTION not in _java_options(off)
    year = _java_options(session_conf(LOCAL_MASTER, tuning_conf(days=365)))
    assert QUICK_COMPILER_OPTION not in year
    assert all(option in year for option in LOCAL_JAVA_OPTIONS)


def _jvm_flag(options: list[str], name: str) -> int:
    """The value the JVM gives flag `name` when started with `options`."""
    printed = subprocess.run(
        ["java", *options, "-XX:+PrintFlagsFinal", "-version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    values = [line.split()[3] for line in printed.splitlines() if f" {name} " in line]
    assert values, f"the JVM printed no flag {name}"
    return int(values[0])


def test_c1_alone_keeps_room_for_a_night_s_compiled_code() -> None:
    """C1 alone would reserve 48 MB for compiled code, of which a `large` nightly fills 45 MB:
    once it is full the JVM stops compiling for the rest of the process."""
    short = _java_options(session_conf(LOCAL_MASTER, tuning_conf(days=1)))
    assert QUICK_COMPILER_OPTION in short
    assert _jvm_flag(short, "ReservedCodeCacheSize") >= 240 * 2**20
    assert _jvm_flag([QUICK_COMPILER_OPTION], "ReservedCodeCacheSize") < 240 * 2**20


def test_a_cycle_s_session_is_tuned_for_the_cycle_not_its_first_step() -> None:
    """A command runs its cycle in one process: the snapshot step, which has no window, starts
    the session that the cycle's long steps then share, so it is tuned for the days the cycle
    extracts."""
    snapshot = StepRequest("extract_snapshot", ("raw.apartments",), "/lake")
    daily = StepRequest(
        "extract_daily", ("raw.bookings",), "/lake", date(2025, 1, 1), date(2025, 1, 8)
    )
    three_years = Cycle.range(date(2023, 1, 1), date(2025, 12, 31)).tags()
    assert session_days(snapshot, three_years) == 1096
    assert QUICK_COMPILER_OPTION not in _java_options(
        tuning_conf(days=session_days(snapshot, three_years))
    )
    # A nightly and an audit compare many days but re-extract only those that changed.
    for cycle in (
        Cycle.nightly(date(2025, 12, 31), 120, date(2023, 1, 1)),
        Cycle.audit(date(2025, 12, 31), date(2023, 1, 1)),
    ):
        assert session_days(snapshot, cycle.tags()) == 1
        assert QUICK_COMPILER_OPTION in _java_options(
            tuning_conf(days=session_days(snapshot, cycle.tags()))
        )
    # A step with a window goes by it; a run launched from the UI has no cycle tags.
    assert session_days(daily, three_years) == 7
    assert session_days(snapshot, {}) is None


CLUSTER_DRIVER = """
import sys
from rental_platform.spark.session import get_or_create_session

spark = get_or_create_session(None)
value = spark.read.jdbc(
    sys.argv[1],
    "(SELECT CAST('2025-01-01 23:30:00' AS DATETIME) AS booked_at) AS q",
    properties={"user": "root", "driver": "org.mariadb.jdbc.Driver"},
).selectExpr("CAST(booked_at AS STRING)", "CAST(booked_at AS DATE)").first()
print(f"{value[0]}|{value[1]}")
"""


def test_a_cluster_driver_reads_datetimes_as_utc_whatever_its_zone(tmp_path: Path) -> None:
    """As on Glue and EMR, spark-submit starts the driver JVM before the step's code, in the
    machine's zone (New York here): a DATETIME read over JDBC keeps its wall-clock value and its
    day. Java options set from the session builder would come too late for this JVM."""
    script = tmp_path / "driver.py"
    script.write_text(CLUSTER_DRIVER)
    spark_submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    env = {
        **os.environ,
        "TZ": "America/New_York",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
    }
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    result = subprocess.run(
        [
            spark_submit,
            "--master",
            "local[1]",
            "--jars",
            MARIADB_JDBC_JAR,
            str(script),
            "jdbc:mysql://127.0.0.1:3306/",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "2025-01-01 23:30:00|2025-01-01"


EVERY_PART_OFF = """
from rental_platform import local
from rental_platform.local.session import local_session

spark = local_session(off=local.PARTS, days=1)
jvm = spark.sparkContext._jvm
file_system = jvm.org.apache.hadoop.fs.FileSystem.get(
    jvm.java.net.URI("file:///"), spark.sparkContext._jsc.hadoopConfiguration()
)
arguments = jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
print(file_system.getClass().getName())
print(" ".join(str(argument) for argument in arguments))
"""


def test_with_every_part_off_the_jvm_runs_as_spark_and_hadoop_ship(tmp_path: Path) -> None:
    """RENTAL_LOCAL_OFF naming every part: the file system Spark's jars choose, no archive, both
    compilers; the local session's own options stay."""
    result = _run_script(tmp_path, EVERY_PART_OFF)
    assert result.returncode == 0, result.stderr[-3000:]
    file_system, arguments = result.stdout.strip().splitlines()[-2:]
    assert file_system != FILE_SYSTEM_CLASS
    assert not any(a.startswith("-XX:SharedArchiveFile") for a in arguments.split())
    assert QUICK_COMPILER_OPTION not in arguments.split()
    assert all(option in arguments.split() for option in LOCAL_JAVA_OPTIONS)


BACKGROUND_START = """
import time
from datetime import date

import psutil

from rental_platform.cycle_tags import Cycle
from rental_platform.local.session import local_session
from rental_platform.resources.spark import LocalSparkRunner


def java_started() -> bool:
    # spark-submit's short-lived shell helpers may end between being listed and being named.
    for child in psutil.Process().children(recursive=True):
        try:
            if "java" in child.name():
                return True
        except psutil.NoSuchProcess:
            continue
    return False


LocalSparkRunner().start_session(Cycle.range(date(2023, 1, 1), date(2025, 12, 31)).tags())
began = time.monotonic()
while not java_started():
    assert time.monotonic() - began < 60, "no JVM started"
    time.sleep(0.01)
print("started before asked")
spark = local_session(days=1)
jvm = spark.sparkContext._jvm
arguments = jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
print(" ".join(str(argument) for argument in arguments))
"""


def test_a_cycle_s_session_starts_in_the_background_tuned_for_the_cycle(tmp_path: Path) -> None:
    """A cycle starts its session while Dagster prepares the first run: the JVM is up before
    any step asks for it, and the first step gets that session, tuned for the cycle (three
    years: both compilers), not a second one of its own."""
    result = _run_script(tmp_path, BACKGROUND_START)
    assert result.returncode == 0, result.stderr[-3000:]
    started, arguments = result.stdout.strip().splitlines()[-2:]
    assert started == "started before asked"
    assert QUICK_COMPILER_OPTION not in arguments.split()
    assert all(option in arguments.split() for option in LOCAL_JAVA_OPTIONS)


COMMAND_START = """
import os
import sys
import threading

from rental_platform.cli import main
from rental_platform.local.session import local_session


class DagsterImported(ImportError):
    pass


class FirstDagsterImport:
    # Stops the command at Dagster's first import, saying whether the JVM is starting. (It
    # cannot wait there for the JVM: a fork waits for the import lock this import holds.)
    def find_spec(self, name, path=None, target=None):
        if name == "dagster":
            starting = any(t.name == "local-spark-session" for t in threading.enumerate())
            raise DagsterImported(f"JVM starting as Dagster is imported: {starting}")


os.environ["DAGSTER_HOME"] = sys.argv[1]
sys.meta_path.insert(0, FirstDagsterImport())
try:
    main(["nightly", "--as-of", "2025-01-02"])
except DagsterImported as stopped:
    print(stopped)
# The session the command began, ended cleanly.
local_session().stop()
"""


def test_a_command_starts_its_jvm_before_it_imports_dagster(tmp_path: Path) -> None:
    """Importing Dagster and building the definitions take about a second, which the first
    step would otherwise spend waiting for the JVM."""
    result = _run_script(tmp_path, COMMAND_START, str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "JVM starting as Dagster is imported: True"


FAILED_BACKGROUND_START = """
from rental_platform.local.session import local_session, start_in_background

conf = {"spark.driver.memory": "not-a-size"}
start_in_background(conf)
try:
    local_session(conf)
except Exception as error:
    print("raised:", type(error).__name__, str(error).splitlines()[0])
"""


def test_a_background_start_that_fails_fails_the_step_that_needs_the_session(
    tmp_path: Path,
) -> None:
    """A JVM that cannot start in the background (a heap size it refuses) is tried again by
    the step that needs the session, which raises Spark's own error: nothing waits forever,
    and nothing is swallowed."""
    result = _run_script(tmp_path, FAILED_BACKGROUND_START)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("raised: PySparkRuntimeError")
    assert "Invalid maximum heap size" in result.stderr
