"""Dagster-free PySpark code: the steps that run locally or, shipped as-is, on Glue / EMR."""
