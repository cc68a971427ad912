"""The local Spark JVM's tuning: the settings each switched-on part adds to the session."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Collection
from pathlib import Path

from rental_platform.local import CLASS_ARCHIVE, FILE_SYSTEM, QUICK_COMPILER
from rental_platform.local.builds import build_dir, spark_jars
from rental_platform.local.file_system import FILE_SYSTEM_CLASS, file_system_jar

# A run of a few months or less is mostly small Spark jobs whose time goes to loading and
# compiling classes, not to rows: the quick C1 compiler alone makes them warm up sooner. A
# longer range runs hot loops over millions of rows, where C2's faster code repays its
# compilation.
QUICK_COMPILER_OPTION = "-XX:TieredStopAtLevel=1"
QUICK_COMPILER_MAX_DAYS = 180
# With C1 alone the JVM reserves 48 MB for compiled code, not the 240 MB it reserves with both
# compilers; a `large` nightly fills 44 MB of it (benchmarks/results/nightly.md). Once it is
# full the JVM stops compiling for good, and every query after that runs interpreted. The
# reservation is address space: memory is committed only as code is compiled into it.
CODE_CACHE_OPTION = "-XX:ReservedCodeCacheSize=240m"


def tuning_conf(
    off: Collection[str] = (), days: int | None = None, archiving_to: Path | None = None
) -> dict[str, str]:
    """Spark settings for the parts not switched `off`, for a range of `days` (None: unknown,
    taken as short). `archiving_to`: write a class-data archive there at exit instead of
    reading one."""
    options: list[str] = []
    if QUICK_COMPILER not in off and (days is None or days <= QUICK_COMPILER_MAX_DAYS):
        options += [QUICK_COMPILER_OPTION, CODE_CACHE_OPTION]
    if archiving_to is not None:
        # The JVM warns of each class it cannot archive (generated ones): thousands of lines.
        options += [f"-XX:ArchiveClassesAtExit={archiving_to}", "-Xlog:cds=off,cds+dynamic=off"]
    elif CLASS_ARCHIVE not in off and (archive := class_archive_path()).is_file():
        options.append(f"-XX:SharedArchiveFile={archive}")
    conf = {"spark.driver.extraJavaOptions": " ".join(options)} if options else {}
    if (jar := file_system_jar()).is_file():
        # On the class path even when switched off: the class-data archive was built with it
        # there, and a JVM whose class path differs from its archive's ignores the archive.
        conf["spark.driver.extraClassPath"] = str(jar)
        if FILE_SYSTEM not in off:
            conf["spark.hadoop.fs.file.impl"] = FILE_SYSTEM_CLASS
    return conf


def class_archive_path() -> Path:
    """Where the class-data archive of this environment's Java and Spark jars is (JDK AppCDS):
    the JVM maps the classes a step loads from it instead of reading and verifying them from
    the jars. `rental-platform class-archive` builds it (`make setup` does). Its name holds a
    fingerprint of the Java binary and the jars on the driver's class path, which the archive
    is only valid for: after an upgrade of either, the old one is ignored until a new one is
    built."""
    java = Path(os.environ.get("JAVA_HOME", ""), "bin", "java")
    if not java.is_file():
        java = Path(shutil.which("java") or "java")
    jar = file_system_jar()
    jars = [*spark_jars(), *([jar] if jar.is_file() else [])]
    fingerprint = hashlib.sha256()
    for path in (java.resolve(), *jars):
        stat = path.stat() if path.exists() else None
        fingerprint.update(f"{path}:{stat and stat.st_size}:{stat and stat.st_mtime_ns}\n".encode())
    return build_dir() / f"spark-classes-{fingerprint.hexdigest()[:16]}.jsa"
