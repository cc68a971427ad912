"""Sample data for the source database: the contract schema plus a deterministic, realistic,
deliberately dirty rental marketplace, so the platform can be run and tested end to end without
production data. MariaDB-only (the big tables are generated with its SEQUENCE engine)."""

from rental_platform.seed.load import seed_source
from rental_platform.seed.scales import SCALES, SeedScale

__all__ = ["SCALES", "SeedScale", "seed_source"]
