"""The anchor a user might pick instead of lineageflow: the bare script plus MLflow
autolog and ``log_model`` (no orchestrator, no lineage). Same data, model and params
as bench/bare.py; prints its timings as one JSON line.

usage: anchor.py CSV TARGET XGB_PARAMS_JSON TRACKING_URI
"""

import json
import sys
import time

t0 = time.perf_counter()
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from xgboost import XGBClassifier  # noqa: E402

t1 = time.perf_counter()
csv, target, params, uri = (
    sys.argv[1],
    sys.argv[2],
    json.loads(sys.argv[3]),
    sys.argv[4],
)
mlflow.set_tracking_uri(uri)
mlflow.set_experiment("anchor")
mlflow.xgboost.autolog(log_models=False)
with mlflow.start_run():
    df = pd.read_csv(csv)
    t2 = time.perf_counter()
    y = df.pop(target)
    X_train, X_test, y_train, y_test = train_test_split(
        df, y, test_size=0.2, random_state=42
    )
    t3 = time.perf_counter()
    model = XGBClassifier(**params, random_state=42, eval_metric="logloss").fit(
        X_train, y_train
    )
    t4 = time.perf_counter()
    auc = roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])
    mlflow.log_metric("test_roc_auc", auc)
    t5 = time.perf_counter()
    mlflow.xgboost.log_model(model, name="model", input_example=X_test.head(5))
    t6 = time.perf_counter()
print(
    json.dumps(
        {
            "import_s": t1 - t0,
            "read_s": t2 - t1,
            "split_s": t3 - t2,
            "fit_s": t4 - t3,
            "score_s": t5 - t4,
            "log_model_s": t6 - t5,
            "roc_auc": auc,
        }
    )
)
