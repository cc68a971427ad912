"""The curated rules of kpis.md: every raw row lands once, curated or quarantined with a reason.

Each rule set is an ordered list of (reason, condition on the raw values). A row's
`reject_reason` is the first rule it breaks; rows that break none are normalised into the
curated table. Quarantined rows keep their raw values unchanged.

Each curated partition records a digest of this module's code and the listing history's
(`code_version.rules_version`), so that a deploy that changes the rules reaches every curated
day and the listings, not only those whose source changes next (kpis.md, "Always equal to a
full recompute").
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Observation
from pyspark.sql import functions as F

from rental_platform import tables
from rental_platform.spark.history import version_of_booking
from rental_platform.tables import EXTRACTED_AT, REJECT_REASON, Table

VALID_STATUSES = ("confirmed", "cancelled", "pending")
# Exactly three ASCII capitals: `\z`, not `$`, which would also match before a final newline.
THREE_LETTERS = r"^[A-Z]{3}\z"


def currency_invalid(column: str = "currency") -> Column:
    """A currency that is not a three-letter code after upper/trim (null, blank, EURO, U$D).
    Spark's trim, like the spec's, removes spaces only."""
    return F.coalesce(~F.upper(F.trim(F.col(column))).rlike(THREE_LETTERS), F.lit(True))


def listing_rules() -> list[tuple[str, Column]]:
    return [
        ("id_null", F.col("id").isNull()),
        ("price_null_or_not_positive", F.col("price").isNull() | (F.col("price") <= 0)),
        ("currency_invalid", currency_invalid()),
        ("listing_created_on_null", F.col("listing_created_on").isNull()),
    ]


def booking_rules() -> list[tuple[str, Column]]:
    return [
        ("booking_id_null", F.col("booking_id").isNull()),
        ("user_id_null", F.col("user_id").isNull()),
        ("apartment_id_null", F.col("apartment_id").isNull()),
        ("booking_date_null", F.col("booking_date").isNull()),
        ("stay_dates_null", F.col("checkin_date").isNull() | F.col("checkout_date").isNull()),
        ("checkout_not_after_checkin", F.col("checkout_date") <= F.col("checkin_date")),
        # A stay cannot start before it was booked.
        ("checkin_before_booking", F.col("checkin_date") < F.to_date(F.col("booking_date"))),
        (
            "total_price_null_or_negative",
            F.col("total_price").isNull() | (F.col("total_price") < 0),
        ),
        ("currency_invalid", currency_invalid()),
        # A null status is not one of the valid ones (isin alone would say null, i.e. passed).
        (
            "invalid_status",
            F.coalesce(
                ~F.lower(F.trim(F.col("booking_status"))).isin(*VALID_STATUSES), F.lit(True)
            ),
        ),
        # No version of the listing is valid on the booking's day.
        ("unknown_apartment", ~F.col("_listing_exists")),
    ]


def viewing_rules() -> list[tuple[str, Column]]:
    return [
        ("user_id_null", F.col("user_id").isNull()),
        ("apartment_id_null", F.col("apartment_id").isNull()),
        ("viewed_at_null", F.col("viewed_at").isNull()),
    ]


COLLAPSED = "collapsed"
_DAY = "_day"


@dataclass
class Curated:
    """The outcome of curating one input: the rows kept and the rows rejected.

    Some raw rows are neither kept nor rejected but merged into a kept row (exact duplicate
    views); they are counted so that nothing goes unaccounted. The count is observed while
    `curated` is computed, not by computing the rules a second time: it is known once an
    action (a write, a count) has run on `curated`.
    """

    curated: DataFrame
    quarantine: DataFrame
    merged: Observation | None = None

    def collapsed_rows(self) -> int:
        """Raw rows merged into a kept row. Waits for the first action on `curated`: call it
        only after one. (Spark drops the observation from a plan over no rows at all: no
        metric then means none merged.)"""
        return (self.merged.get.get(COLLAPSED) or 0) if self.merged else 0


def _observe_merged(df: DataFrame, merged_rows: Column) -> tuple[DataFrame, Observation]:
    merged = Observation()
    return df.observe(merged, F.sum(merged_rows).alias(COLLAPSED)), merged


def first_broken_rule(rules: list[tuple[str, Column]]) -> Column:
    """The reason of the first rule a row breaks, or null. A rule whose value is null passes."""
    return F.coalesce(*[F.when(condition, F.lit(reason)) for reason, condition in rules])


def _split(df: DataFrame, rules: list[tuple[str, Column]], quarantine: Table):
    flagged = df.withColumn(REJECT_REASON.name, first_broken_rule(rules))
    rejected = flagged.where(F.col(REJECT_REASON.name).isNotNull()).select(*quarantine.column_names)
    kept = flagged.where(F.col(REJECT_REASON.name).isNull())
    return kept, rejected


def _trim_strings(df: DataFrame, table: Table) -> DataFrame:
    return df.select(
        *[
            F.trim(F.col(c.name)).alias(c.name) if c.type == "string" else F.col(c.name)
            for c in table.columns
        ]
    )


def curate_listings(apartments: DataFrame, attributes: DataFrame) -> Curated:
    """Apartments left-joined to their attributes; a listing without attributes keeps nulls."""
    joined = apartments.join(attributes.drop(EXTRACTED_AT.name), on="id", how="left").select(
        *tables.QUARANTINE_LISTINGS.column_names[:-1]
    )
    kept, rejected = _split(joined, listing_rules(), tables.QUARANTINE_LISTINGS)
    curated = (
        _trim_strings(kept, tables.CURATED_LISTINGS)
        .withColumn("currency", F.upper(F.col("currency")))
        .withColumn("is_active", F.coalesce(F.col("is_active"), F.lit(False)))
    )
    return Curated(curated, rejected)


def curate_bookings(bookings: DataFrame, history: DataFrame) -> Curated:
    """The rules, then normalisation. A booking of a listing with no version in `history`
    (curated.listings_history) valid on its day is rejected as `unknown_apartment`.

    The source's key makes each booking_id one row, and the extraction keeps each in the day
    of its current booking_date only, so there is nothing to de-duplicate here.
    """
    versions = F.broadcast(history.select("id", "valid_from", "valid_to"))
    # Versions of a listing do not overlap (a checked invariant): at most one matches a day.
    matched = bookings.join(versions, version_of_booking(bookings, versions), "left")
    with_listing = matched.withColumn("_listing_exists", versions["id"].isNotNull()).drop(
        versions["id"], versions["valid_from"], versions["valid_to"]
    )
    kept, rejected = _split(with_listing, booking_rules(), tables.QUARANTINE_BOOKINGS)
    curated = (
        kept.withColumn("booking_status", F.lower(F.trim(F.col("booking_status"))))
        .withColumn("currency", F.upper(F.trim(F.col("currency"))))
        .withColumn("nights", F.datediff(F.col("checkout_date"), F.col("checkin_date")))
        .select(*tables.CURATED_BOOKINGS.column_names)
    )
    return Curated(curated, rejected)


def curate_user_viewing(views: DataFrame, day_partitions: int | None = None) -> Curated:
    """Valid views with `is_wishlisted` null read as false; exact duplicates collapse to one.

    Duplicates are judged after that normalisation: a null and a false wishlist flag say the
    same thing, and no two curated views may be equal. The first extraction of a view is kept:
    a hash aggregation, where a window would sort millions of rows.

    With `day_partitions`, the views are first gathered by the day of `viewed_at` into that
    many Spark partitions, and de-duplicated within them (copies of a view share its day): the
    curated rows come out clustered by day, ready to be written one file per day, after one
    shuffle instead of two.
    """
    kept, rejected = _split(views, viewing_rules(), tables.QUARANTINE_USER_VIEWING)
    normalised = kept.withColumn("is_wishlisted", F.coalesce(F.col("is_wishlisted"), F.lit(False)))
    grouping = list(tables.CURATED_USER_VIEWING.distinct)
    if day_partitions:
        normalised = normalised.withColumn(_DAY, F.to_date("viewed_at")).repartition(
            day_partitions, _DAY
        )
        grouping.insert(0, _DAY)
    copies, merged = _observe_merged(
        normalised.groupBy(*grouping).agg(
            F.min(EXTRACTED_AT.name).alias(EXTRACTED_AT.name), F.count(F.lit(1)).alias("_copies")
        ),
        F.col("_copies") - 1,
    )
    return Curated(copies.select(*tables.CURATED_USER_VIEWING.column_names), rejected, merged)
