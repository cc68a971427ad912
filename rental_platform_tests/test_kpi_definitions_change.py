"""A deploy that changes a KPI definition: the next nightly computes every period again under
it, though no day those periods read changed, and leaves the warehouse as a full recompute
under the new definitions would (kpis.md, "Always equal to a full recompute")."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from rental_platform.remote_code import code_package
from rental_platform.spark import code_version, kpis
from rental_platform.spark.manifest import CommitLog, store_for
from rental_platform_tests.harness import Platform, kpi_digests

START, DAY = date(2025, 1, 1), date(2025, 1, 6)
# The week before the worked example's: only its listings' prices reach it, and no nightly
# after DAY re-extracts or re-curates a day of it.
QUIET_WEEK = date(2024, 12, 30)
DEPLOYED = "a digest of the deployed KPI definitions"


@pytest.fixture(scope="module")
def computed(platform: Platform) -> Platform:
    """The worked example run 2025-01-01..06 under the KPI definitions as they are."""
    platform.load_worked_example()
    platform.run(START, DAY)
    return platform


def _digests(platform: Platform) -> set[str | None]:
    return kpi_digests(CommitLog(store_for(platform.settings.lake_root)).head())


def _deploy_prices_in_cents(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a deploy that reports the mean listing price in cents would run."""
    avg_listing_price = kpis.avg_listing_price
    monkeypatch.setattr(
        kpis,
        "avg_listing_price",
        lambda history, weeks: avg_listing_price(history, weeks).withColumn(
            "avg_price", (F.col("avg_price") * 100).cast("decimal(12,2)")
        ),
    )
    monkeypatch.setattr(code_version, "kpis_version", lambda: DEPLOYED)


def test_a_deploy_that_changes_a_kpi_definition_computes_every_period_again(
    computed: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = computed
    current = code_version.kpis_version()
    assert _digests(platform) == {current}
    avg_price = 'SELECT * FROM presentation."avg_listing_price" ORDER BY 1, 2'
    assert platform.warehouse(avg_price) == [(QUIET_WEEK, "USD", Decimal("200.00"), 2)]

    _deploy_prices_in_cents(monkeypatch)
    deployed = DAY + timedelta(days=1)
    outcomes = platform.nightly(deployed)

    assert all(not o.failed_checks for o in outcomes)
    assert _digests(platform) == {DEPLOYED}
    # 200.00 USD over two listings, in cents: the week no day of which changed.
    assert platform.warehouse(avg_price) == [(QUIET_WEEK, "USD", Decimal("20000.00"), 2)]

    # A full recompute under the deployed definitions finds nothing to change.
    state = platform.state()
    platform.run(START, deployed)
    assert platform.state() == state


def _digests_in_a_fresh_process(*options: str, path: str | None = None) -> list:
    script = (
        "import json, sys\n"
        + (f"sys.path.insert(0, {path!r})\n" if path else "")
        + "from rental_platform.spark import code_version\n"
        "print(json.dumps([code_version.rules_version(), code_version.kpis_version(),\n"
        "                  code_version.__file__, 'pyspark' in sys.modules]))\n"
    )
    output = subprocess.run(
        [sys.executable, *options, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output)


def test_the_digests_are_read_without_importing_spark_code() -> None:
    """The Dagster side reads them to decide what is stale and to version the KPI assets: in a
    fresh process they are the same, and pyspark stays unimported."""
    rules, kpis_digest, _, spark_imported = _digests_in_a_fresh_process()
    assert (rules, kpis_digest, spark_imported) == (
        code_version.rules_version(),
        code_version.kpis_version(),
        False,
    )


def test_a_remote_job_reads_the_same_digests_from_its_archive(tmp_path: Path) -> None:
    """A Glue or EMR job imports the code from the deployed archive: what its KPI step records
    must be what the Dagster side compares it with. An isolated interpreter, without this
    machine's packages, reads them from the archive alone."""
    archive = tmp_path / "code.zip"
    archive.write_bytes(code_package().archive)
    rules, kpis_digest, module, _ = _digests_in_a_fresh_process("-I", "-S", path=str(archive))
    assert module.startswith(str(archive))
    assert (rules, kpis_digest) == (code_version.rules_version(), code_version.kpis_version())
