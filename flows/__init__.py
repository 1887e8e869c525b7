"""Prefect flows: training-pipeline, promote-model (and reproduce-run)."""
