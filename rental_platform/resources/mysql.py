"""The marketplace's MySQL database: the source, only ever read."""

from __future__ import annotations

from functools import cached_property

import dagster as dg

from rental_platform.contract import SourceConnection
from rental_platform.settings import MySqlSource, parse_mysql_url


class SourceDatabase(dg.ConfigurableResource):
    """Where the source is. Configure `url` with `EnvVar("RENTAL_MYSQL_URL")` so the UI and the
    run config show the variable's name, never the password inside it."""

    url: str

    @cached_property
    def source(self) -> MySqlSource:
        """The parsed `url`, once per resource."""
        return parse_mysql_url(self.url)

    def connection(self) -> SourceConnection:
        return SourceConnection(self.source.jdbc_url, self.source.user, self.source.password)

    @property
    def redacted_url(self) -> str:
        return self.source.redacted_url
