"""One lineageflow run in a fresh process, as a worker would start it; prints timings.

usage: pipeline_run.py train WORKSPACE [--skip] [--no-reuse]
       | reproduce WORKSPACE RUN_ID
       | sweep WORKSPACE parallel|sequential|dask GRID_JSON [DASK_ADDRESS]
"""

import json
import sys
import time


def main() -> None:
    t0 = time.perf_counter()
    mode, workspace = sys.argv[1], sys.argv[2]
    # only the flow this run starts, as a worker imports only its entrypoint
    if mode == "sweep":
        from flows.sweep import sweep_on
    elif mode == "reproduce":
        from flows.reproduce import reproduce_run
    else:
        from flows.training import training_pipeline
    t1 = time.perf_counter()
    out: dict = {"import_s": t1 - t0}
    if mode == "train":
        res = training_pipeline(
            workspace=workspace,
            skip_if_unchanged="--skip" in sys.argv,
            reuse="--no-reuse" not in sys.argv,
        )
        out["flow_s"] = time.perf_counter() - t1
        out.update(summary=res)
        if not res.get("skipped"):
            from mlflow import MlflowClient

            from lineageflow.workspace import open_workspace

            c = MlflowClient(open_workspace(workspace).tracking_uri())
            kids = c.search_runs(
                [res["experiment_id"]],
                filter_string=f"tags.mlflow.parentRunId = '{res['run_id']}'",
            )
            for k in kids:
                out.update(
                    {
                        f"{k.data.tags['lineageflow.stage']}.{m}": v
                        for m, v in k.data.metrics.items()
                        if m.endswith("_seconds")
                    }
                )
    elif mode == "reproduce":
        res = reproduce_run(run_id=sys.argv[3], workspace=workspace)
        out["flow_s"] = time.perf_counter() - t1
        out.update(summary=res)
    elif mode == "sweep":
        grid = json.loads(sys.argv[4])
        runner = {"parallel": "process", "sequential": "thread"}.get(
            sys.argv[3], sys.argv[3]
        )
        address = sys.argv[5] if len(sys.argv) > 5 else None  # a running cluster
        res = sweep_on(runner, address=address)(workspace=workspace, grid=grid)
        out["flow_s"] = time.perf_counter() - t1
        from mlflow import MlflowClient

        from lineageflow.workspace import open_workspace

        c = MlflowClient(open_workspace(workspace).tracking_uri())
        run = c.get_run(res["run_id"])
        kids = c.search_runs(
            [run.info.experiment_id],
            filter_string=(
                f"tags.mlflow.parentRunId = '{res['run_id']}' and tags.`lineageflow.stage` = 'sweep'"
            ),
        )
        fits = sorted(k.data.metrics.get("fit_seconds", 0.0) for k in kids)
        out["fit_seconds_median"] = fits[len(fits) // 2] if fits else 0.0
        out["fit_seconds_sum"] = sum(fits)
        # the configs' child runs: summed, and from the first start to the last end
        out["children_sum"] = sum(
            (k.info.end_time - k.info.start_time) / 1e3 for k in kids
        )
        out["children_span"] = (
            max(k.info.end_time for k in kids) - min(k.info.start_time for k in kids)
        ) / 1e3
        out["complete_children"] = sum(
            1
            for k in kids
            if k.info.status == "FINISHED"
            and "test_roc_auc" in k.data.metrics
            and "max_depth" in k.data.params
        )
    print("BENCH_JSON " + json.dumps(out, default=str))


# the sweep's process pool spawns workers that re-import __main__: keep it inert
if __name__ == "__main__":
    main()
