"""Retraining when the data changes.

The ``watch-workspace`` flow (flows.watch) fetches the workspace's upstream
branch, reads what its head names (lineageflow.retrain.head), compares it with
the lineage of the current Staging version (``detect``, pure) and sends one
``lineageflow.data.changed`` event per change (lineageflow.retrain.events).
The ``train`` deployment's trigger turns an event into a run of that commit in
a worktree (flows.training); a change already trained, whatever its outcome,
is never trained again (lineageflow.retrain.trained, a durable check in
MLflow, not only Prefect's short event dedupe).
"""
