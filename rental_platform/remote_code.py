"""The code a remote Spark job runs: the Dagster-free Spark package, zipped with what it imports,
a one-line entry script, and the JDBC driver that reads the source (Glue and EMR bring MySQL's,
not the MariaDB driver the steps use), all named by a hash of their content.

`rental-platform deploy` uploads them; the remote runners compute the same names from the code
on this machine, so a job always runs exactly the code the Dagster side was built from.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import dagster_pipes

import rental_platform
from rental_platform.contract import MARIADB_JDBC_JAR
from rental_platform.settings import S3Location

ENTRY_SCRIPT = b"from rental_platform.spark.entrypoint import main\n\nmain()\n"
# A fixed timestamp, so the same sources always give the same archive bytes.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


def _sources() -> dict[str, Path]:
    """Archive name -> file: the Spark package, the catalogue and the contract it reads, and
    dagster_pipes (pure Python, and not installed on Glue or EMR)."""
    package = Path(rental_platform.__file__).parent
    files = {
        f"rental_platform/{name}": package / name
        for name in ("__init__.py", "tables.py", "contract.py")
    }
    files |= {f"rental_platform/spark/{p.name}": p for p in (package / "spark").glob("*.py")}
    pipes = Path(dagster_pipes.__file__).parent
    files |= {
        f"dagster_pipes/{p.relative_to(pipes)}": p
        for p in pipes.rglob("*")
        if p.is_file() and p.suffix in (".py", ".typed")
    }
    return files


@dataclass(frozen=True)
class CodePackage:
    archive: bytes
    entry_script: bytes
    driver_jar: bytes
    digest: str

    @property
    def files(self) -> dict[str, bytes]:
        """What `deploy` uploads, by name."""
        return {
            self.archive_name: self.archive,
            self.entry_script_name: self.entry_script,
            self.driver_jar_name: self.driver_jar,
        }

    @property
    def archive_name(self) -> str:
        return f"rental_platform_spark-{self.digest}.zip"

    @property
    def entry_script_name(self) -> str:
        return f"entrypoint-{self.digest}.py"

    @property
    def driver_jar_name(self) -> str:
        return f"mariadb-java-client-{self.digest}.jar"

    def driver_jar_uri(self, code: S3Location) -> str:
        return code.object_uri(self.driver_jar_name)

    def archive_uri(self, code: S3Location) -> str:
        return code.object_uri(self.archive_name)

    def entry_script_uri(self, code: S3Location) -> str:
        return code.object_uri(self.entry_script_name)


@cache
def code_package() -> CodePackage:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in sorted(_sources().items()):
            info = zipfile.ZipInfo(name, ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    content = buffer.getvalue()
    jar = Path(MARIADB_JDBC_JAR).read_bytes()
    digest = hashlib.sha256(content + ENTRY_SCRIPT + jar).hexdigest()[:16]
    return CodePackage(content, ENTRY_SCRIPT, jar, digest)
