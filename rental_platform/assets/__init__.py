"""The Dagster face of the platform: thin multi-assets, one per layer and partition grain
(with a remote runner, one per job, whose steps run in one remote launch)."""
