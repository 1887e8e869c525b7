"""Prefect flows (training-pipeline, reproduce-run, promote-model, sweep) and the
entry points that run them: the lineageflow CLI and the demo."""
