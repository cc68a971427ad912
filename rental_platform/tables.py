"""The table catalogue: every table of every layer, its columns, types, keys and partitioning.

This is the single place that spells a column list. Spark steps, asset checks, asset metadata
and warehouse DDL all read it. It imports neither Dagster nor Spark, because it ships with the
Spark code to Glue / EMR and is read by the Dagster side too.

Column types are Spark SQL type names; `length` gives a string column's VARCHAR size in the
warehouse (None: unbounded text).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Layer(StrEnum):
    RAW = "raw"
    CURATED = "curated"
    QUARANTINE = "quarantine"
    PRESENTATION = "presentation"


class Grain(StrEnum):
    """How a table is partitioned. SNAPSHOT tables are replaced whole on every run."""

    SNAPSHOT = "snapshot"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    length: int | None = None
    # A Spark SQL predicate every non-null value must satisfy (the value-range check).
    valid: str | None = None


@dataclass(frozen=True)
class Table:
    layer: Layer
    name: str
    description: str
    columns: tuple[Column, ...]
    grain: Grain = Grain.SNAPSHOT
    # The column whose day / week / month places a row in its partition.
    partition_column: str | None = None
    # Columns that identify a row; unique and not null in curated and presentation tables.
    key: tuple[str, ...] = ()
    # For a table without a key: columns no two rows share all the values of (nulls compare
    # equal, and may occur).
    distinct: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """`layer.name`, the table's name everywhere outside the warehouse."""
        return f"{self.layer}.{self.name}"

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def has_undated_rows(self) -> bool:
        """Daily tables whose partition column may be null keep those rows in a side snapshot."""
        return self.grain is Grain.DAILY and self.layer in (Layer.RAW, Layer.QUARANTINE)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.id} has no column {name!r}")


def _rate(name: str, description: str) -> Column:
    return Column(name, "double", description, valid=f"{name} BETWEEN 0 AND 1")


def _rank(description: str) -> Column:
    return Column("rank", "bigint", description, valid="rank >= 1")


def _count(name: str, description: str) -> Column:
    return Column(name, "bigint", description, valid=f"{name} >= 0")


EXTRACTED_AT = Column(
    "_extracted_at", "timestamp", "When the platform read this row from the source (UTC)."
)
REJECT_REASON = Column("reject_reason", "string", "The first curated rule the row breaks.", 64)
WEEK_START = Column("week_start", "date", "Monday of the ISO week.")
MONTH_START = Column("month_start", "date", "First day of the month.")
CURRENCY = Column("currency", "string", "ISO 4217 code, upper-cased and trimmed.", 10)
STATE = Column("state", "string", "Two-letter state code of the listing.", 50)
CITYNAME = Column(
    "cityname", "string", "City name of the listing (a city is the pair state, cityname).", 100
)

# --- Source columns, typed as the contract (spec/source_schema.sql) says -----------------------

APARTMENT_COLUMNS = (
    Column("id", "bigint", "Listing id."),
    Column("title", "string", "Listing title.", 255),
    Column("source", "string", "Where the listing came from.", 100),
    Column(
        "price", "decimal(10,2)", "Asking price of the listing, in `currency`.", valid="price > 0"
    ),
    Column("currency", "string", "ISO 4217 code of the price.", 10),
    Column("listing_created_on", "timestamp", "When the listing was created (UTC)."),
    Column("is_active", "boolean", "Whether the listing is active."),
    Column("last_modified_timestamp", "timestamp", "Last change to the listing (UTC)."),
)
ATTRIBUTE_COLUMNS = (
    Column("id", "bigint", "Listing id (same as apartments.id)."),
    Column("category", "string", "Listing category.", 255),
    Column("body", "string", "Listing text."),
    Column("amenities", "string", "Comma-separated amenities."),
    Column("bathrooms", "decimal(3,1)", "Number of bathrooms."),
    Column("bedrooms", "decimal(3,1)", "Number of bedrooms."),
    Column("fee", "decimal(10,2)", "Fee."),
    Column("has_photo", "string", "'Yes', 'No' or 'Thumbnail'.", 10),
    Column("pets_allowed", "string", "Pets allowed, e.g. 'Cats,Dogs' or 'None'.", 255),
    Column("price_display", "string", "Price as displayed.", 255),
    Column("price_type", "string", "'Monthly' or 'Weekly'.", 50),
    Column("square_feet", "int", "Size in square feet."),
    Column("address", "string", "Street address.", 255),
    Column("cityname", "string", "City name.", 100),
    Column("state", "string", "Two-letter state code.", 50),
    Column("latitude", "decimal(10,7)", "Latitude."),
    Column("longitude", "decimal(10,7)", "Longitude."),
)
VIEWING_COLUMNS = (
    Column("user_id", "bigint", "Viewer."),
    Column("apartment_id", "bigint", "Viewed listing."),
    Column("viewed_at", "timestamp", "When the page was viewed (UTC)."),
    Column("is_wishlisted", "boolean", "Whether the viewer wishlisted the listing."),
    Column("call_to_action", "string", "e.g. 'contact_owner', 'book_now', 'none'.", 100),
)
BOOKING_COLUMNS = (
    Column("booking_id", "bigint", "Booking id."),
    Column("user_id", "bigint", "Customer."),
    Column("apartment_id", "bigint", "Booked listing."),
    Column("booking_date", "timestamp", "When the booking was made (UTC)."),
    Column("checkin_date", "date", "First night of the stay."),
    Column("checkout_date", "date", "Day of departure (exclusive)."),
    Column(
        "total_price",
        "decimal(10,2)",
        "Total price of the stay, in `currency`.",
        valid="total_price >= 0",
    ),
    Column("currency", "string", "ISO 4217 code of the price.", 10),
    Column("booking_status", "string", "'confirmed', 'cancelled' or 'pending'.", 50),
)
# The joined listing row, before curation: apartments plus attributes (without the second id).
LISTING_COLUMNS = APARTMENT_COLUMNS + ATTRIBUTE_COLUMNS[1:]

# --- Raw -------------------------------------------------------------------------------------

RAW_APARTMENTS = Table(
    Layer.RAW,
    "apartments",
    "Full snapshot of the source `apartments` table.",
    (*APARTMENT_COLUMNS, EXTRACTED_AT),
)
RAW_APARTMENT_ATTRIBUTES = Table(
    Layer.RAW,
    "apartment_attributes",
    "Full snapshot of the source `apartment_attributes` table.",
    (*ATTRIBUTE_COLUMNS, EXTRACTED_AT),
)
RAW_BOOKINGS = Table(
    Layer.RAW,
    "bookings",
    "Source `bookings`, one partition per day of `booking_date`.",
    (*BOOKING_COLUMNS, EXTRACTED_AT),
    Grain.DAILY,
    "booking_date",
)
RAW_USER_VIEWING = Table(
    Layer.RAW,
    "user_viewing",
    "Source `user_viewing` page views, one partition per day of `viewed_at`.",
    (*VIEWING_COLUMNS, EXTRACTED_AT),
    Grain.DAILY,
    "viewed_at",
)

# --- Curated and quarantine -----------------------------------------------------------------

CURATED_LISTINGS = Table(
    Layer.CURATED,
    "listings",
    "Valid listings: apartments left-joined to their attributes, strings trimmed, "
    "currency upper-cased, is_active null read as false.",
    (*LISTING_COLUMNS, EXTRACTED_AT),
    key=("id",),
)
CURATED_LISTINGS_HISTORY = Table(
    Layer.CURATED,
    "listings_history",
    "Every version of every curated listing (slowly changing dimension, type 2): a listing as "
    "each snapshot saw it, valid from `valid_from` (inclusive) to `valid_to` (exclusive; null "
    "for the current version). A listing's first version is valid from 0001-01-01.",
    (
        *LISTING_COLUMNS,
        EXTRACTED_AT,
        Column("valid_from", "date", "First day this version is valid (inclusive)."),
        Column(
            "valid_to", "date", "Day this version stopped being valid (exclusive); null if current."
        ),
    ),
    key=("id", "valid_from"),
)
CURATED_BOOKINGS = Table(
    Layer.CURATED,
    "bookings",
    "Valid bookings: status lower/trimmed, currency upper/trimmed, with `nights`; the latest "
    "extracted version of each booking_id.",
    (
        *BOOKING_COLUMNS,
        Column("nights", "int", "Nights of the stay: checkout - checkin.", valid="nights > 0"),
        EXTRACTED_AT,
    ),
    Grain.DAILY,
    "booking_date",
    key=("booking_id",),
)
CURATED_USER_VIEWING = Table(
    Layer.CURATED,
    "user_viewing",
    "Valid page views, exact duplicates collapsed, is_wishlisted null read as false.",
    (*VIEWING_COLUMNS, EXTRACTED_AT),
    Grain.DAILY,
    "viewed_at",
    # Views have no key (a null call_to_action is valid): exact duplicates collapse instead.
    distinct=tuple(column.name for column in VIEWING_COLUMNS),
)


def _quarantine_of(curated: Table, raw_columns: tuple[Column, ...]) -> Table:
    return replace(
        curated,
        layer=Layer.QUARANTINE,
        description=f"Rows rejected from curated `{curated.name}`, raw values unchanged, "
        "with the first rule each breaks.",
        columns=(*raw_columns, EXTRACTED_AT, REJECT_REASON),
        key=(),
        distinct=(),
    )


QUARANTINE_LISTINGS = _quarantine_of(CURATED_LISTINGS, LISTING_COLUMNS)
QUARANTINE_BOOKINGS = _quarantine_of(CURATED_BOOKINGS, BOOKING_COLUMNS)
QUARANTINE_USER_VIEWING = _quarantine_of(CURATED_USER_VIEWING, VIEWING_COLUMNS)

# --- Presentation (spec/kpis.md) -------------------------------------------------------------


def _weekly(name: str, description: str, key: tuple[str, ...], *columns: Column) -> Table:
    return Table(
        Layer.PRESENTATION,
        name,
        description,
        (WEEK_START, *columns),
        Grain.WEEKLY,
        "week_start",
        key=("week_start", *key),
    )


AVG_LISTING_PRICE = _weekly(
    "avg_listing_price",
    "Mean asking price of active listings by week of creation and currency.",
    ("currency",),
    CURRENCY,
    Column("avg_price", "decimal(12,2)", "Mean price, rounded to cents.", valid="avg_price > 0"),
    _count("listing_count", "Active listings created in the week."),
)
POPULAR_LOCATIONS = _weekly(
    "popular_locations",
    "Cities ranked by the week's confirmed bookings.",
    ("state", "cityname"),
    STATE,
    CITYNAME,
    _count("booking_count", "Confirmed bookings of listings in the city."),
    _rank("RANK() by booking_count, descending, within the week."),
)
TOP_LISTINGS = _weekly(
    "top_listings",
    "The week's ten highest-revenue listings per currency (ties may add more).",
    ("currency", "apartment_id"),
    CURRENCY,
    Column("apartment_id", "bigint", "Listing id."),
    Column("title", "string", "Listing title.", 255),
    STATE,
    CITYNAME,
    Column(
        "revenue",
        "decimal(12,2)",
        "Sum of total_price of the week's confirmed bookings.",
        valid="revenue >= 0",
    ),
    _count("booking_count", "Confirmed bookings of the listing in the week."),
    _rank("RANK() by revenue, descending, within (week, currency)."),
)
BOOKINGS_PER_USER = _weekly(
    "bookings_per_user",
    "Confirmed bookings per customer and week.",
    ("user_id",),
    Column("user_id", "bigint", "Customer."),
    Column(
        "booking_count", "bigint", "The customer's confirmed bookings.", valid="booking_count >= 1"
    ),
)
AVG_BOOKING_DURATION = _weekly(
    "avg_booking_duration",
    "Length of stay of the week's confirmed bookings.",
    (),
    Column("avg_nights", "double", "Mean nights.", valid="avg_nights > 0"),
    Column(
        "median_nights",
        "bigint",
        "Median nights (the lower middle value for an even count).",
        valid="median_nights > 0",
    ),
    _count("booking_count", "Confirmed bookings of the week."),
)
REPEAT_CUSTOMER_RATE = _weekly(
    "repeat_customer_rate",
    "Share of customers with two or more confirmed bookings in the 30 days ending on the "
    "week's Sunday.",
    (),
    _count("customers", "Distinct users with at least one confirmed booking."),
    _count("repeat_customers", "Users with at least two confirmed bookings."),
    _rate("repeat_rate", "repeat_customers / customers (null when no customers)."),
)
ENGAGEMENT_FUNNEL = _weekly(
    "engagement_funnel",
    "Page views of the week and how many turned into bookings.",
    (),
    _count("views", "Curated page views."),
    _count("unique_viewers", "Distinct viewers."),
    _rate("wishlist_rate", "Wishlisted views / views."),
    _rate(
        "view_to_booking_rate",
        "Share of viewed (user, listing) pairs booked (confirmed) by that user the same week.",
    ),
)
OCCUPANCY_RATE = Table(
    Layer.PRESENTATION,
    "occupancy_rate",
    "Booked share of the nights active listings could be booked, per month.",
    (
        MONTH_START,
        _count("available_nights", "Nights of the month since each active listing's creation."),
        _count("booked_nights", "Distinct (listing, night) pairs under a confirmed booking."),
        _rate("occupancy_rate", "booked / available (null when available is 0)."),
    ),
    Grain.MONTHLY,
    "month_start",
    key=("month_start",),
)

ALL_TABLES: tuple[Table, ...] = (
    RAW_APARTMENTS,
    RAW_APARTMENT_ATTRIBUTES,
    RAW_BOOKINGS,
    RAW_USER_VIEWING,
    CURATED_LISTINGS,
    QUARANTINE_LISTINGS,
    CURATED_LISTINGS_HISTORY,
    CURATED_BOOKINGS,
    QUARANTINE_BOOKINGS,
    CURATED_USER_VIEWING,
    QUARANTINE_USER_VIEWING,
    AVG_LISTING_PRICE,
    POPULAR_LOCATIONS,
    TOP_LISTINGS,
    BOOKINGS_PER_USER,
    AVG_BOOKING_DURATION,
    REPEAT_CUSTOMER_RATE,
    ENGAGEMENT_FUNNEL,
    OCCUPANCY_RATE,
)
TABLES: dict[str, Table] = {table.id: table for table in ALL_TABLES}


def tables_of(layer: Layer, grain: Grain | None = None) -> tuple[Table, ...]:
    """The layer's tables, of one grain or all."""
    return tuple(t for t in ALL_TABLES if t.layer is layer and grain in (None, t.grain))
