"""Tables as they come: read CSV / Parquet, validate, and decide the task.

Plain functions on pandas; no Prefect, no MLflow. Every refusal is one line
naming the file or column and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from lineageflow.errors import DataError

Format = Literal["csv", "parquet"]
Task = Literal["binary", "multiclass", "regression"]
SUFFIXES: dict[str, Format] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# an integer-valued numeric target with at most this many values is classes
MAX_INT_CLASSES = 20


def table_files(path: Path) -> tuple[list[Path], Format]:
    """The files of one dataset (a file, or a directory read in name order) and
    their one format, judged by suffix."""
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
        )
        if not files:
            raise DataError(
                f"{path} holds no .csv or .parquet files: add data and run `dvc add`"
            )
    else:
        files = [path]
    formats = {SUFFIXES.get(f.suffix.lower(), "csv") for f in files}
    if len(formats) > 1:
        raise DataError(
            f"{path} mixes CSV and Parquet files: keep one format per dataset"
        )
    return files, formats.pop()


def _read_one(path: Path, fmt: Format) -> pd.DataFrame:
    if fmt == "parquet":
        import pyarrow as pa

        try:
            return pd.read_parquet(path)
        except (pa.ArrowException, OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(
                f"{path} is not readable Parquet ({first[:200]}): rewrite it, "
                "`dvc add` and commit"
            ) from None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: add rows and run `dvc add`") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise DataError(
            f"{path} is not readable CSV ({first}): if it is Parquet, name it "
            "*.parquet; else fix it, `dvc add` and commit"
        ) from None


def read_table(path: Path) -> tuple[pd.DataFrame, Format]:
    """Read a dataset; parts of a directory must agree on their columns' types."""
    files, fmt = table_files(path)
    frames = [_read_one(f, fmt) for f in files]
    if len(frames) > 1:
        check_same_schema(list(zip(files, frames, strict=True)), path)
        df = pd.concat(frames, ignore_index=True)
    else:
        df = frames[0]
    return df, fmt


def _kind(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return "numeric"
    if isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s):
        return "categorical"
    return str(s.dtype)


def check_same_schema(parts: list[tuple[Path, pd.DataFrame]], where: Path) -> None:
    """A column that is numbers in one data version and text in another would be
    trained on as whatever pandas makes of the mix: refuse it by name."""
    (first_path, first), *rest = parts
    for path, df in rest:
        if list(df.columns) != list(first.columns):
            missing = sorted(set(first.columns) ^ set(df.columns))
            raise DataError(
                f"{path.name} and {first_path.name} in {where} have different "
                f"columns ({', '.join(map(str, missing[:5]))}): make every part "
                "share one set of columns"
            )
        for col in first.columns:
            a, b = first[col], df[col]
            if a.isna().all() or b.isna().all():
                continue
            if _kind(a) != _kind(b):
                raise DataError(
                    f"column '{col}' changed type between data versions in {where}: "
                    f"{_kind(a)} ({a.dtype}) in {first_path.name}, {_kind(b)} "
                    f"({b.dtype}) in {path.name}: convert it to one type and `dvc add`"
                )


def validate_frame(df: pd.DataFrame, target: str, name: str = "dataset") -> None:
    """Refuse data no model should be trained on, with a fix in the message."""
    if df.empty:
        raise DataError(f"{name} has no rows: add data and run `dvc add`")
    features = df.drop(columns=[target]) if target in df.columns else df
    check_table(
        df.iloc[:0],
        target,
        int(df[target].isna().sum()) if target in df.columns else 0,
        [str(c) for c in features.columns if features[c].isna().all()],
        name,
    )


def check_table(
    meta: pd.DataFrame, target: str, missing_labels: int, empty: list[str], name: str
) -> None:
    """The checks of ``validate_frame`` on what they need: the table's columns
    and dtypes (``meta``, no rows), the rows without a label, and the feature
    columns with no value at all. A table held in partitions (the Dask engine)
    sums those over its partitions."""
    if target not in meta.columns:
        cols = ", ".join(map(str, meta.columns[:8]))
        raise DataError(
            f"target column '{target}' is not in {name} (columns: {cols}): "
            "set data.target in params.yaml"
        )
    if missing_labels:
        raise DataError(
            f"{name} has {missing_labels} rows with a missing '{target}' label: "
            "drop or label them, then `dvc add`"
        )
    features = meta.drop(columns=[target])
    if features.shape[1] == 0:
        raise DataError(f"{name} has no feature columns besides '{target}'")
    if empty:
        raise DataError(
            f"{name} column(s) {empty[:5]} are entirely empty: drop them before "
            "`dvc add`, or fill them"
        )
    odd = [
        f"{c} ({features[c].dtype})"
        for c in features.columns
        if _kind(features[c]) not in ("numeric", "categorical")
    ]
    if odd:
        raise DataError(
            f"{name} has feature columns of unsupported types {odd[:5]}: convert "
            "them to numbers or strings (e.g. a date to days since an epoch)"
        )


def _integer_valued(y: pd.Series) -> bool:
    if pd.api.types.is_integer_dtype(y) or pd.api.types.is_bool_dtype(y):
        return True
    if not pd.api.types.is_float_dtype(y):
        return False
    values = y.to_numpy(dtype="float64")
    return bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))


def _single_class(y: pd.Series, target: str) -> DataError:
    return DataError(
        f"the data has a single class in '{target}' ({y.iloc[0]}): a classifier "
        "needs at least two; add rows of another class, or set train.task: regression"
    )


def infer_task(y: pd.Series, setting: str, target: str) -> tuple[Task, str]:
    """The task for target ``y`` and the reason, logged with the run.

    ``setting`` is ``train.task``: ``auto`` decides from the target; an explicit
    classification task on a continuous target is refused.
    """
    n = int(y.nunique())
    numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    continuous = numeric and (not _integer_valued(y) or n > MAX_INT_CLASSES)
    if setting == "regression":
        if not numeric:
            raise DataError(
                f"target '{target}' is not numeric ({y.dtype}) but train.task is "
                "regression: set train.task to binary or multiclass (or auto)"
            )
        return "regression", "train.task is regression"
    if setting in ("binary", "multiclass"):
        if continuous:
            raise DataError(
                f"target '{target}' looks continuous ({n} distinct values, e.g. "
                f"{y.iloc[0]!r}) but train.task is {setting}: set train.task to "
                "regression (or auto)"
            )
        if setting == "binary" and n != 2:
            raise DataError(
                f"target '{target}' has {n} classes but train.task is binary: set "
                "train.task to multiclass (or auto)"
            )
        if n < 2:
            raise _single_class(y, target)
        return setting, f"train.task is {setting}"
    if continuous:
        why = "non-integer values" if not _integer_valued(y) else f"{n} distinct values"
        return "regression", f"auto: numeric target '{target}' with {why}"
    if n < 2:
        raise _single_class(y, target)
    task: Task = "binary" if n == 2 else "multiclass"
    return task, f"auto: target '{target}' has {n} distinct values"


def signature_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The frame as MLflow's schema inference accepts it: pandas categoricals as
    strings (the model's input schema describes raw rows, not its encoding)."""
    cats = [c for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype)]
    if not cats:
        return df
    return df.assign(**{c: df[c].astype(object) for c in cats})
