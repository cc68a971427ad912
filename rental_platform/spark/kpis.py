"""The KPI definitions of kpis.md, computed from curated tables for a window of periods.

Each function takes the curated inputs and the window's period starts (Mondays or first days
of months) and returns the rows of those periods. Inputs may hold more days than the window
(the repeat-customer window reaches 23 days before the week's Monday); every function keeps
only what its definition asks for. Listings come from the listing history: a period sees each
listing as it was on the period's last day (`period_versions` for every listing of every period,
`with_versions` for the listings of the rows at hand).
"""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from rental_platform.spark.history import valid_on, versions_on, with_versions
from rental_platform.spark.layout import next_period
from rental_platform.tables import Grain

# How far back a week's repeat-customer window reaches: Sunday - 29 days = Monday - 23 days.
REPEAT_WINDOW_DAYS = 30
REPEAT_LOOKBACK_DAYS = REPEAT_WINDOW_DAYS - 7


def repeat_window_start(week: date) -> date:
    """The first day of the week's repeat-customer window: the first booking day it reads."""
    return week - timedelta(days=REPEAT_LOOKBACK_DAYS)


def week_of(column: str) -> Column:
    """Monday of the ISO week of a date or timestamp (Spark truncates weeks to Mondays)."""
    return F.to_date(F.date_trunc("week", F.col(column)))


def confirmed(bookings: DataFrame) -> DataFrame:
    # Curated statuses are already lower-cased and trimmed.
    return bookings.where(F.col("booking_status") == "confirmed")


def _in(column: Column, starts: list[date]) -> Column:
    """The column (a period start) is one of the periods asked for, which may have gaps."""
    return column.isin(*starts)


def _periods_frame(spark: SparkSession, name: str, starts: list[date]) -> DataFrame:
    # Built in the JVM: a frame from Python rows starts Python workers, for a handful of dates.
    dates = F.array(*(F.lit(start) for start in starts))
    return spark.range(1).select(F.explode(dates).alias(name))


def period_versions(history: DataFrame, starts: list[date], grain: Grain, name: str) -> DataFrame:
    """Per period (column `name`, its start), the listing versions valid on its last day."""
    ends = F.array(
        *(
            F.struct(
                F.lit(start).alias(name),
                F.lit(next_period(grain, start) - timedelta(days=1)).alias("_last_day"),
            )
            for start in starts
        )
    )
    periods = history.sparkSession.range(1).select(F.explode(ends).alias("_p")).select("_p.*")
    return versions_on(history, periods, "_last_day")


def has_city() -> Column:
    """A listing has a city only when both its state and city name are non-empty."""
    return (F.trim(F.col("state")) != "") & (F.trim(F.col("cityname")) != "")


def sunday_of_week() -> Column:
    """The last day of the week that starts on column `week_start`."""
    return F.date_add(F.col("week_start"), 6)


def avg_listing_price(history: DataFrame, weeks: list[date]) -> DataFrame:
    """Mean price of the active listings created in each week, as they were on its Sunday.

    A version counts for the week of its own creation date when it is the one valid on that
    week's Sunday: each listing is looked at once, not once per week.

    The mean is exact: in whole cents, (2 * sum + n) div (2 * n) rounds the exact quotient
    half away from zero (prices are positive), with no binary fraction on the way."""
    cents = (
        history.withColumn("week_start", week_of("listing_created_on"))
        .where(_in(F.col("week_start"), weeks) & F.col("is_active") & valid_on(sunday_of_week()))
        .groupBy("week_start", "currency")
        .agg(
            (F.sum("price") * 100).cast("long").alias("_cents"),
            F.count(F.lit(1)).alias("listing_count"),
        )
        .withColumn("_rounded", F.expr("(2 * _cents + listing_count) div (2 * listing_count)"))
    )
    return cents.select(
        "week_start",
        "currency",
        (F.col("_rounded").cast("decimal(20,0)") / F.lit(100))
        .cast("decimal(12,2)")
        .alias("avg_price"),
        "listing_count",
    )


def weekly_confirmed(bookings: DataFrame, weeks: list[date]) -> DataFrame:
    """The window's confirmed bookings, each with the week of its booking date."""
    return (
        confirmed(bookings)
        .withColumn("week_start", week_of("booking_date"))
        .where(_in(F.col("week_start"), weeks))
    )


def popular_locations(week_bookings: DataFrame, history: DataFrame) -> DataFrame:
    counts = (
        with_versions(
            week_bookings, history, "apartment_id", sunday_of_week(), ("state", "cityname")
        )
        .where(has_city())
        .groupBy("week_start", "state", "cityname")
        .agg(F.count(F.lit(1)).alias("booking_count"))
    )
    by_count = Window.partitionBy("week_start").orderBy(F.col("booking_count").desc())
    return counts.withColumn("rank", F.rank().over(by_count))


def top_listings(week_bookings: DataFrame, history: DataFrame, top: int = 10) -> DataFrame:
    revenue = week_bookings.groupBy("week_start", "currency", "apartment_id").agg(
        F.sum("total_price").cast("decimal(12,2)").alias("revenue"),
        F.count(F.lit(1)).alias("booking_count"),
    )
    by_revenue = Window.partitionBy("week_start", "currency").orderBy(F.col("revenue").desc())
    ranked = revenue.withColumn("rank", F.rank().over(by_revenue)).where(F.col("rank") <= top)
    details = ("title", "state", "cityname")
    return with_versions(ranked, history, "apartment_id", sunday_of_week(), details, "left")


def bookings_per_user(week_bookings: DataFrame) -> DataFrame:
    return week_bookings.groupBy("week_start", "user_id").agg(
        F.count(F.lit(1)).alias("booking_count")
    )


def avg_booking_duration(week_bookings: DataFrame) -> DataFrame:
    """Mean and lower median of nights: the median is element (n + 1) div 2 of the sorted list."""
    stats = week_bookings.groupBy("week_start").agg(
        F.avg("nights").alias("avg_nights"),
        F.sort_array(F.collect_list("nights")).alias("_sorted"),
        F.count(F.lit(1)).alias("booking_count"),
    )
    middle = F.element_at(F.col("_sorted"), ((F.col("booking_count") + 1) / 2).cast("int"))
    return stats.withColumn("median_nights", middle).drop("_sorted")


def repeat_customer_rate(spark: SparkSession, bookings: DataFrame, weeks: list[date]) -> DataFrame:
    """A row for every week: customers of the 30 days ending on its Sunday, and repeaters.

    A booking day d lies in the window of every week whose Sunday is in [d, d + 29], that is
    the weeks starting on the Mondays from d's own Monday up to d + 23 days: at most five.
    """
    day = F.to_date(F.col("booking_date"))
    per_user = (
        confirmed(bookings)
        .withColumn(
            "week_start",
            F.explode(
                F.sequence(
                    F.to_date(F.date_trunc("week", day)),
                    F.date_add(day, REPEAT_LOOKBACK_DAYS),
                    F.expr("INTERVAL 7 DAYS"),
                )
            ),
        )
        .where(_in(F.col("week_start"), weeks))
        .groupBy("week_start", "user_id")
        .agg(F.count(F.lit(1)).alias("_bookings"))
    )
    per_week = per_user.groupBy("week_start").agg(
        F.count(F.lit(1)).alias("customers"),
        F.sum(F.when(F.col("_bookings") >= 2, 1).otherwise(0)).alias("repeat_customers"),
    )
    return (
        _periods_frame(spark, "week_start", weeks)
        .join(per_week, "week_start", "left")
        .fillna(0, ["customers", "repeat_customers"])
        .withColumn(
            "repeat_rate",
            F.when(F.col("customers") > 0, F.col("repeat_customers") / F.col("customers")).cast(
                "double"
            ),
        )
    )


def engagement_funnel(views: DataFrame, week_bookings: DataFrame, weeks: list[date]) -> DataFrame:
    """Views, viewers, wishlist rate and the share of (viewer, listing) pairs booked, per week.

    The views are shuffled once, by (week, viewer): the distinct pairs, the viewer counts and
    the join with the viewer's booked listings all happen where the rows already lie, with no
    sort (the booked listings are a set per viewer, hashed, not sorted).
    """
    viewer = ["week_start", "user_id"]
    pair = [*viewer, "apartment_id"]
    per_pair = (
        views.withColumn("week_start", week_of("viewed_at"))
        .where(_in(F.col("week_start"), weeks))
        .select(*pair, "is_wishlisted")
        .repartition(*viewer)
        .groupBy(*pair)
        .agg(
            F.count(F.lit(1)).alias("_views"),
            F.sum(F.col("is_wishlisted").cast("long")).alias("_wishlisted"),
        )
    )
    booked = (
        week_bookings.select(*pair)
        .repartition(*viewer)
        .groupBy(*viewer)
        .agg(F.collect_set("apartment_id").alias("_booked"))
    )
    per_viewer = (
        per_pair.join(booked.hint("shuffle_hash"), viewer, "left")
        .groupBy(*viewer)
        .agg(
            F.sum("_views").alias("_views"),
            F.sum("_wishlisted").alias("_wishlisted"),
            F.count(F.lit(1)).alias("_pairs"),
            F.sum(F.when(F.array_contains("_booked", F.col("apartment_id")), 1).otherwise(0)).alias(
                "_booked_pairs"
            ),
        )
    )
    return per_viewer.groupBy("week_start").agg(
        F.sum("_views").alias("views"),
        F.count(F.lit(1)).alias("unique_viewers"),
        (F.sum("_wishlisted") / F.sum("_views")).alias("wishlist_rate"),
        (F.sum("_booked_pairs") / F.sum("_pairs")).alias("view_to_booking_rate"),
    )


def occupancy_rate(history: DataFrame, bookings: DataFrame, months: list[date]) -> DataFrame:
    """A row for every month: nights active listings could be booked, and nights booked.

    A month sees each listing as it was on its last day. A listing is available from the date
    of its creation; a night counts as booked once however many confirmed bookings cover it.
    """
    first, end = F.lit(months[0]), F.lit(next_period(Grain.MONTHLY, months[-1]))
    active = (
        period_versions(history, months, Grain.MONTHLY, "month_start")
        .where(F.col("is_active"))
        .select("month_start", F.to_date("listing_created_on").alias("_created"))
    )
    available = (
        active.withColumn(
            "_nights",
            F.greatest(
                F.lit(0),
                F.datediff(
                    F.add_months(F.col("month_start"), 1),
                    F.greatest(F.col("month_start"), F.col("_created")),
                ),
            ),
        )
        .groupBy("month_start")
        .agg(F.sum("_nights").cast("bigint").alias("available_nights"))
    )
    nights = (
        confirmed(bookings)
        .select(
            "apartment_id",
            F.greatest(F.col("checkin_date"), first).alias("_from"),
            F.least(F.col("checkout_date"), end).alias("_until"),
        )
        .where(F.col("_from") < F.col("_until"))
        .select(
            "apartment_id",
            F.explode(F.sequence("_from", F.date_sub(F.col("_until"), 1))).alias("_night"),
        )
        .distinct()
        .withColumn("month_start", F.trunc("_night", "month"))
    )
    # Each night with its listing's version of the month's last day, looked up by id in the
    # history, not in a broadcast table of every month's active listings (7 million rows at
    # 200,000 listings over 3 years).
    booked = (
        with_versions(
            nights.where(_in(F.col("month_start"), months)),
            history,
            "apartment_id",
            F.last_day("month_start"),
            ("is_active", "listing_created_on"),
        )
        .where(F.col("is_active") & (F.col("_night") >= F.to_date("listing_created_on")))
        .groupBy("month_start")
        .agg(F.count(F.lit(1)).alias("booked_nights"))
    )
    return (
        _periods_frame(history.sparkSession, "month_start", months)
        .join(available, "month_start", "left")
        .join(booked, "month_start", "left")
        .fillna(0, ["available_nights", "booked_nights"])
        .withColumn(
            "occupancy_rate",
            F.when(
                F.col("available_nights") > 0,
                F.col("booked_nights") / F.col("available_nights"),
            ).cast("double"),
        )
    )
