"""promote-model: re-check a registered version and promote it when everything passes.

For a version left in None (say, its data was not pushed): fix the cause, then
promote it without retraining. The checks read the run back from MLflow, so a
record or tag edited since the run is refused here too.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from lineageflow.registry import champion, promotion
from lineageflow.registry.recheck import registered_version
from lineageflow.runs.context import workspace_store
from lineageflow.runs.flowstart import flow_setup
from tasks.registry import explain


@flow(name="promote-model", log_prints=True)
def promote_model(model_name: str, version: int | str, workspace: str = ".") -> str:
    """Re-run every lineage check on MODEL_NAME vVERSION; promote to Staging if all pass.

    The champion comparison uses the metrics each version recorded on its own
    holdout (the holdout rows are not kept between runs).

    Args:
        model_name: the registered model's name.
        version: the version number to re-check, e.g. 3.
        workspace: the workspace git repo the version was trained from.
    """
    logger = flow_setup()
    ws, uri = workspace_store(workspace)
    v = registered_version(uri, model_name, version)
    decision = promotion.decide(
        uri,
        model_name,
        v.version,
        v.run_id,
        ws.root,
        v.source,
        in_progress=False,
        metrics=champion.holdout_metrics(uri, v.run_id),
        evaluate_cfg=v.cfg.evaluate,
        champion=champion.recorded_champion(uri, model_name, v.version),
        promote=True,
    )
    if decision.previous and decision.previous != v.version:
        explain(uri, model_name, decision, v.run_id, str(ws.root))
    message = decision.message(model_name)
    if v.earlier is not None:
        message += f" ({v.earlier.line()})"
    logger.info(message)
    promotion.refuse_if_failed(decision, model_name)
    return message


def promote_version(model_name: str, version: str, workspace: str | Path) -> str:
    return promote_model(
        model_name=model_name, version=version, workspace=str(workspace)
    )
