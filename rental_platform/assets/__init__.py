"""The Dagster face of the platform: thin multi-assets, one per layer and partition grain."""
