"""`rental-platform run` exits non-zero with a clear message, and never prints a password."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest

from rental_platform.cli import main


@pytest.fixture
def environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    monkeypatch.setenv("RENTAL_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("RENTAL_WAREHOUSE_URL", f"duckdb:///{tmp_path / 'warehouse.duckdb'}")


def test_a_failing_step_fails_the_command(environment, monkeypatch, capsys) -> None:
    # The server refuses this password: the very first Spark step (extraction) fails.
    monkeypatch.setenv("RENTAL_MYSQL_URL", "mysql://root:hunter2@127.0.0.1:3306/rental_nowhere")
    assert main(["run", "--start", "2025-01-01", "--end", "2025-01-02"]) == 1
    captured = capsys.readouterr()
    assert "snapshots" in captured.err and "step raw_snapshots" in captured.err
    assert "hunter2" not in captured.out + captured.err


def test_an_empty_range_is_refused(environment, capsys) -> None:
    assert main(["run", "--start", "2025-01-05", "--end", "2025-01-01"]) == 1
    assert "before --start" in capsys.readouterr().err


def test_a_range_before_the_partitions_is_refused(environment, capsys) -> None:
    assert main(["run", "--start", "2024-06-01", "--end", "2024-06-02"]) == 1
    assert "RENTAL_PARTITIONS_START" in capsys.readouterr().err
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs() == []  # refused before launching anything


def test_a_local_platform_does_not_import_the_aws_libraries(environment) -> None:
    """dagster-aws and boto3 take about a second to import: a run on this machine, with a
    local lake, must not pay it before its first step."""
    program = (
        "import sys\n"
        "from rental_platform.definitions import build_definitions\n"
        "from rental_platform.settings import Settings\n"
        "build_definitions(Settings.from_env()).resolve_all_job_defs()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 'dagster_aws'}))\n"
    )
    imported = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout
    assert imported.strip() == "[]"
