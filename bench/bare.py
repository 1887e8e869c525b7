"""The baseline: what a person would write without lineageflow. Same data, same model,
same params as the pipeline; prints its timings as one JSON line."""

import json
import sys
import time

t0 = time.perf_counter()
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from xgboost import XGBClassifier  # noqa: E402

t1 = time.perf_counter()
csv, target, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
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
t5 = time.perf_counter()
print(
    json.dumps(
        {
            "import_s": t1 - t0,
            "read_s": t2 - t1,
            "split_s": t3 - t2,
            "fit_s": t4 - t3,
            "score_s": t5 - t4,
            "roc_auc": auc,
        }
    )
)
