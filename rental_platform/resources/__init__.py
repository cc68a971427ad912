"""The platform's edges: the source database, the lake, the warehouse and the Spark runner."""
