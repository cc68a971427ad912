"""The house's shape: the Dagster side loads its definitions without pyspark (a deployment
whose steps run on Glue or EMR needs no Spark), no module of the package imports one that
imports it back, and the pinned requirements are what the package declares."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tomllib
import zipfile
from itertools import chain
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rental_platform import tables
from rental_platform.remote_code import code_package

pytestmark = pytest.mark.fast

PACKAGE = Path(__file__).resolve().parents[1] / "rental_platform"
# Imports of pyspark fail in the child, as where pyspark is not installed.
WITHOUT_PYSPARK = """
import sys
sys.modules["pyspark"] = None
from rental_platform.definitions import build_definitions
from rental_platform.settings import Settings
defs = build_definitions(Settings.from_env())
defs.resolve_all_job_defs()
print(len(defs.resolve_all_asset_specs()), sys.modules["pyspark"], defs.executor.name)
"""
REMOTE = {
    "RENTAL_SPARK_RUNNER": "glue",
    "RENTAL_PIPES_S3_PREFIX": "s3://pipes-bucket/dagster-pipes",
    "RENTAL_CODE_S3_PREFIX": "s3://code-bucket/code",
    "RENTAL_GLUE_JOB_NAME": "rental-platform",
    "RENTAL_LAKE_ROOT": "s3://lake-bucket/lake",
}


@pytest.mark.parametrize("runner", ["local", "glue"])
def test_the_definitions_load_without_pyspark(runner: str, tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DAGSTER_HOME": str(tmp_path),
        "RENTAL_MYSQL_URL": "mysql://reader@127.0.0.1:3306/rental",
        "RENTAL_LAKE_ROOT": str(tmp_path / "lake"),
        "RENTAL_WAREHOUSE_URL": f"duckdb:///{tmp_path / 'warehouse.duckdb'}",
        "AWS_DEFAULT_REGION": "us-east-1",
        **(REMOTE if runner == "glue" else {}),
    }
    loaded = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYSPARK], env=env, capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    # Every table of the catalogue and the plan of source changes; the executor follows the
    # runner (in-process for local Spark's shared session, a process per remote step).
    executor = "in_process" if runner == "local" else "multiprocess"
    assert loaded.stdout.split() == [str(len(tables.ALL_TABLES) + 1), "None", executor]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules `path` imports, anywhere in it: `from a import b` names module
    a.b where there is one, else module a."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names} & modules
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            found |= submodules or ({node.module} & modules)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    paths = {_module(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: _imports(path, set(paths)) - {name} for name, path in paths.items()}
    loops: list[list[str]] = []

    def visit(name: str, trail: list[str]) -> None:
        for imported in sorted(graph[name]):
            if imported in trail:
                loops.append([*trail[trail.index(imported) :], imported])
            elif imported not in done:
                visit(imported, [*trail, imported])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert loops == []


def test_requirements_pin_what_the_package_declares() -> None:
    """pyproject.toml declares compatible ranges, requirements.txt pins one set: every pin is
    declared, and falls in its range."""
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    declared = [
        Requirement(line)
        for line in [*project["dependencies"], *chain(*project["optional-dependencies"].values())]
    ]
    pins = {
        canonicalize_name(requirement.name): requirement
        for line in (PACKAGE.parent / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
        for requirement in [Requirement(line)]
    }
    assert sorted(pins) == sorted(canonicalize_name(r.name) for r in declared)
    outside = [
        f"{pins[canonicalize_name(r.name)]} outside {r}"
        for r in declared
        if not r.specifier.contains(next(iter(pins[canonicalize_name(r.name)].specifier)).version)
    ]
    assert outside == []


def test_the_remote_code_package_holds_what_a_remote_step_imports() -> None:
    """A remote job runs from the archive `deploy` uploads, with no other copy of the package:
    every module the step's entry point imports, however indirectly, must be in it."""
    paths = {_module(path): path for path in PACKAGE.rglob("*.py")}
    needed, todo = set(), ["rental_platform.spark.entrypoint", "rental_platform.spark.pipes_step"]
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += _imports(paths[name], set(paths))
    with zipfile.ZipFile(io.BytesIO(code_package().archive)) as archive:
        shipped = set(archive.namelist())
    missing = sorted(
        str(paths[name].relative_to(PACKAGE.parent))
        for name in needed
        if str(paths[name].relative_to(PACKAGE.parent)) not in shipped
    )
    assert missing == []
