"""rental-platform: a Dagster asset-based data platform for rental-marketplace analytics."""
