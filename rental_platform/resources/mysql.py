"""The marketplace's MySQL database: the source, only ever read."""

from __future__ import annotations

import dagster as dg

from rental_platform.contract import SourceConnection
from rental_platform.settings import parse_mysql_url


class SourceDatabase(dg.ConfigurableResource):
    """Where the source is. Configure `url` with `EnvVar("RENTAL_MYSQL_URL")` so the UI and the
    run config show the variable's name, never the password inside it."""

    url: str

    def connection(self) -> SourceConnection:
        source = parse_mysql_url(self.url)
        return SourceConnection(source.jdbc_url, source.user, source.password)

    @property
    def redacted_url(self) -> str:
        return parse_mysql_url(self.url).redacted_url
