"""sweep in worker processes: every configuration's child run complete and parented."""

import pytest
from mlflow import MlflowClient

from flows.sweep import sweep_on

pytestmark = pytest.mark.usefixtures("prefect_api")
GRID = [
    {"n_estimators": n, "max_depth": d, "n_jobs": 1, "tree_method": "hist"}
    for n in (10, 20)
    for d in (2, 4)
]


@pytest.mark.parametrize("runner", ["process", "thread", "dask"])
def test_sweep_logs_every_configuration(make_workspace, tracking, runner):
    """Processes, one at a time, and prefect-dask's DaskTaskRunner on a LocalCluster
    of two worker processes: every config a complete child run, none lost."""
    ws = make_workspace(rows=2000).workspace
    out = sweep_on(runner)(workspace=str(ws), grid=GRID)
    assert sorted(r["index"] for r in out["results"]) == [0, 1, 2, 3]
    c = MlflowClient(tracking)
    parent = c.get_run(out["run_id"])
    children = c.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{out['run_id']}' and tags.`lineageflow.stage` = 'sweep'",
    )
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    for r in children:  # autolog wrote each config's own params, none lost
        i = int(r.data.tags["lineageflow.sweep_index"])
        assert int(r.data.params["max_depth"]) == GRID[i]["max_depth"], sorted(
            r.data.params
        )
        assert "test_roc_auc" in r.data.metrics
    assert out["best"]["roc_auc"] == max(r["roc_auc"] for r in out["results"])
