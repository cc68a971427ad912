"""The file system the local Spark JVM writes the lake through (part `file_system`).

Without Hadoop's native library (it is not in pyspark), Hadoop's local file system sets the
permissions of each file and folder it creates by starting a `chmod` process, about six per
partition Spark writes: for small partitions that costs more than writing them.
`NioLocalFileSystem.java` sets them through java.nio instead. `rental-platform class-archive`
(make setup) compiles it once per environment; without a Java compiler, the session uses
Hadoop's own.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from rental_platform.local.builds import build_dir, spark_jars

SOURCE = Path(__file__).with_name("NioLocalFileSystem.java")
FILE_SYSTEM_CLASS = "rental.NioLocalFileSystem"


def file_system_jar() -> Path:
    """The compiled file system; its name holds a digest of the source it was built from."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    return build_dir() / f"nio-local-fs-{digest}.jar"


def build_file_system_jar() -> Path | None:
    """Compile the file system against Spark's jars; None when there is no Java compiler."""
    javac = shutil.which("javac")
    if javac is None:
        return None
    target = file_system_jar()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rental-local-fs-") as classes:
        classpath = os.pathsep.join(str(jar) for jar in spark_jars())
        subprocess.run(
            [javac, "-nowarn", "-cp", classpath, "-d", classes, str(SOURCE)],
            check=True,
            capture_output=True,
        )
        partial = target.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w") as jar:
            for compiled in sorted(Path(classes).rglob("*.class")):
                jar.write(compiled, compiled.relative_to(classes).as_posix())
        partial.replace(target)
    return target
