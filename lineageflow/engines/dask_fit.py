"""The Dask engine's fit: xgboost's own Dask interface (a DaskQuantileDMatrix and
``xgboost.dask.train``, the ``hist`` method) on the training partitions, where
placement put them; the booster comes back as an ordinary xgboost estimator
inside the same raw-rows pipeline the local engine fits, so MLflow's pyfunc
serves it on one machine and ``load_verified`` checks it as any other model."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from lineageflow.engines import partitions as P
from lineageflow.engines.cluster import watched
from lineageflow.errors import ConfigError, DataError
from lineageflow.model.ml import Split

# seconds an allreduce may wait for a peer (xgboost's default is far longer)
COLLECTIVE_SECONDS = 300


def parts_of(model: Any) -> tuple[Any, Any, Any]:
    """(wrapper or None, the raw-frame step, the xgboost estimator) of the model
    lineageflow.model.estimators builds for ``train.model: xgboost``."""
    from sklearn.pipeline import Pipeline
    from xgboost import XGBModel

    from lineageflow.model.modelparts import LabeledClassifier, RawFrame

    wrapper = model if isinstance(model, LabeledClassifier) else None
    pipe = model.estimator if wrapper is not None else model
    steps = pipe.steps if isinstance(pipe, Pipeline) else []
    if (
        len(steps) != 2
        or not isinstance(steps[0][1], RawFrame)
        or not isinstance(steps[1][1], XGBModel)
    ):
        raise ConfigError(
            f"compute.engine dask fits xgboost models only, not {type(pipe).__name__}: "
            "set train.model: xgboost, or compute.engine: local"
        )
    return wrapper, steps[0][1], steps[1][1]


def booster_params(est: Any, task: str, n_classes: int) -> tuple[dict, int]:
    """The estimator's booster parameters for ``xgboost.dask.train`` and its
    number of rounds, as its own ``fit`` would set them."""
    params = est.get_xgb_params()
    for key in ("enable_categorical", "n_jobs", "missing"):
        params.pop(key, None)
    params["tree_method"] = "hist"
    if task == "binary":
        params.setdefault("objective", "binary:logistic")
    elif task == "multiclass":
        params["objective"] = "multi:softprob"
        params["num_class"] = n_classes
    rounds = est.get_params().get("n_estimators") or 100
    return params, int(rounds)


def fit_xgboost(engine, model: Any, split: Split) -> Any:
    import dask.dataframe as dd
    import mlflow
    from xgboost import dask as dxgb
    from xgboost.collective import Config as CollConfig

    wrapper, raw, est = parts_of(model)
    t = split.data
    raw.columns_ = [str(c) for c in t.features.columns]
    raw.categories_ = {c: v for c, v in t.categories.items() if c in raw.columns_}
    Xs, ys = t.sides["train"]
    casted = [
        engine._on(w, P.transform, raw, X) for X, w in zip(Xs, t.workers, strict=True)
    ]
    meta_X = raw.transform(t.features)
    X = dd.from_delayed(casted, meta=meta_X, verify_meta=False)
    ytype = "float64" if split.task == "regression" else "int64"
    y = dd.from_delayed(list(ys), meta=_series(ytype), verify_meta=False)
    params, rounds = booster_params(est, split.task, len(split.labels))

    def fit():
        dtrain = dxgb.DaskQuantileDMatrix(engine.client, X, y, enable_categorical=True)
        pin(dtrain, engine.cluster.workers(), t.workers)
        return dxgb.train(
            engine.client,
            params,
            dtrain,
            num_boost_round=rounds,
            # a collective operation waiting on a dead peer fails, not hangs
            coll_cfg=CollConfig(timeout=COLLECTIVE_SECONDS),
        )

    try:
        out = watched(engine.cluster, fit, "fitting xgboost")
    except (ConfigError, DataError):
        raise
    except Exception as exc:  # a lost worker, or a collective that broke with it
        raise engine.lost("fitting xgboost", exc) from None
    fitted = type(est)(**est.get_params())
    fitted.load_model(bytearray(out["booster"].save_raw("json")))
    mlflow.log_params({"xgboost_rounds": rounds, "dask_partitions": len(Xs)})
    model_pipe = wrapper.estimator if wrapper is not None else model
    model_pipe.steps[-1] = (model_pipe.steps[-1][0], fitted)
    if wrapper is not None:
        wrapper.classes_ = np.asarray(wrapper.labels, dtype=object)
    return model


def _series(dtype: str):
    import pandas as pd

    return pd.Series(dtype=dtype)


def pin(dtrain: Any, workers: list[str], placed: list[str]) -> None:
    """Give xgboost's training the placement's partitions per worker, in
    partition order, ranked by worker name (``DaskDMatrix.worker_map``): where
    Dask's scheduler put them varies from fit to fit, and so would the model."""
    order = sorted(
        (f for fs in dtrain.worker_map.values() for f in fs),
        key=lambda f: dtrain.partition_order[f.key],
    )
    by_worker: dict[str, list] = defaultdict(list)
    for f, w in zip(order, placed, strict=True):
        by_worker[w].append(f)
    dtrain.worker_map = {w: by_worker[w] for w in workers if by_worker[w]}
