"""The thresholds the data-quality checks compare with, visible in the UI's resource config."""

from __future__ import annotations

import dagster as dg

from rental_platform.contract import CheckLimits


class CheckLimitsResource(dg.ConfigurableResource):
    """RENTAL_MAX_QUARANTINE_SHARE and RENTAL_FRESHNESS_HOURS."""

    max_quarantine_share: float = CheckLimits.max_quarantine_share
    freshness_hours: float = CheckLimits.freshness_hours

    def limits(self) -> CheckLimits:
        return CheckLimits(self.max_quarantine_share, self.freshness_hours)
