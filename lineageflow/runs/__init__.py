"""Runs: the run context, the stage pattern, MLflow run lifecycle, reuse, publishing."""
