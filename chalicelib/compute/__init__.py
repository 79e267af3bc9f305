"""Compute-to-data: environments, request validation, jobs, dispatch to Batch, status events."""
