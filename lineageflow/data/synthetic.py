"""Deterministic synthetic customer-churn data for the demo, tests and benchmarks.

Nothing is downloaded: rows come from a seeded generator with a known logistic
ground truth, so a model has real signal to find and a drifted version is a
genuinely different population.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TARGET = "churned"


def make_customers(n_rows: int, seed: int, drift: float = 0.0) -> pd.DataFrame:
    """Customer-churn rows. ``drift`` in [0, 1] shifts prices, support load and
    the churn drivers, as a later data version would."""
    rng = np.random.default_rng(seed)
    tenure = rng.gamma(shape=2.0, scale=14.0, size=n_rows).clip(0, 120).round()
    contract = rng.choice([1, 12, 24], size=n_rows, p=[0.55, 0.25, 0.20])
    monthly = rng.normal(65 + 12 * drift, 22, n_rows).clip(15, 160).round(2)
    products = rng.poisson(1.6, n_rows) + 1
    support = rng.poisson(1.2 + 1.5 * drift, n_rows)
    age = rng.normal(44, 14, n_rows).clip(18, 90).round()
    partner = rng.binomial(1, 0.48, n_rows)
    paperless = rng.binomial(1, 0.6, n_rows)
    autopay = rng.binomial(1, 0.45, n_rows)
    sessions = rng.lognormal(3.0 - 0.3 * drift, 0.6, n_rows).round(1)
    region = rng.integers(0, 5, n_rows)
    total = (monthly * tenure * rng.normal(1.0, 0.05, n_rows)).round(2)

    logit = (
        0.4
        - 0.045 * tenure
        - 0.9 * (contract == 12)
        - 1.8 * (contract == 24)
        + 0.018 * (monthly - 65)
        + (0.35 + 0.25 * drift) * support
        - 0.25 * products
        - 0.3 * partner
        + 0.25 * paperless
        - 0.45 * autopay
        - 0.012 * (sessions - 20)
        + 0.15 * (region == 3)
        + 0.004 * (age - 44) ** 2 / 10
        + rng.normal(0, 0.6, n_rows)
    )
    churned = rng.binomial(1, 1 / (1 + np.exp(-logit)))
    return pd.DataFrame(
        {
            "tenure_months": tenure.astype("int64"),
            "contract_months": contract.astype("int64"),
            "monthly_charges": monthly,
            "total_charges": total,
            "num_products": products.astype("int64"),
            "support_calls": support.astype("int64"),
            "age": age.astype("int64"),
            "has_partner": partner.astype("int64"),
            "paperless_billing": paperless.astype("int64"),
            "autopay": autopay.astype("int64"),
            "avg_session_minutes": sessions,
            "region": region.astype("int64"),
            TARGET: churned.astype("int64"),
        }
    )


def make_classification_frame(
    n_rows: int, n_features: int, seed: int, target: str = TARGET
) -> pd.DataFrame:
    """A wide numeric classification table (benchmarks: 500k x 40)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=n_rows,
        n_features=n_features,
        n_informative=max(2, n_features // 2),
        n_redundant=max(0, n_features // 8),
        flip_y=0.05,
        random_state=seed,
    )
    df = pd.DataFrame(
        X.astype("float32"), columns=[f"f{i:02d}" for i in range(n_features)]
    )
    df[target] = y.astype("int64")
    return df


def make_classification_part(
    n_rows: int, n_features: int, seed: int, part: int, target: str = TARGET
) -> pd.DataFrame:
    """One partition of a wide numeric classification table, made without the
    rest of it (a table larger than memory is written file by file): the ground
    truth comes from ``seed`` alone, the rows from ``(seed, part)``. Features
    are float32, standard normal; half are informative (a linear term, one
    interaction and one curvature, so trees have more than a line to find),
    labels are Bernoulli draws of their logistic, 5% then flipped."""
    informative = max(2, n_features // 2)
    weights = np.random.default_rng(seed).normal(0.0, 1.0, informative)
    weights *= 2.0 / np.sqrt(informative)
    rng = np.random.default_rng([seed, part])
    X = rng.standard_normal((n_rows, n_features), dtype=np.float32)
    logit = X[:, :informative] @ weights.astype(np.float32)
    logit += 0.8 * X[:, 0] * X[:, 1] - 0.5 * (X[:, 2] ** 2 - 1.0)
    y = rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))
    flip = rng.random(n_rows) < 0.05
    df = pd.DataFrame(X, columns=[f"f{i:02d}" for i in range(n_features)], copy=False)
    df[target] = (y ^ flip).astype("int64")
    return df


def make_mixed(n_rows: int, seed: int, task: str = "binary") -> pd.DataFrame:
    """A table as real ones come: text and pandas-category columns, integers,
    and missing values in numbers and in text. Target ``label``: text classes
    (``binary``: churn/stay; ``multiclass``: bronze/silver/gold) or a float
    (``regression``)."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "plus", "premium"], size=n_rows, p=[0.5, 0.3, 0.2])
    region = rng.choice(["north", "south", "east", "west"], size=n_rows)
    channel = rng.choice(["web", "store", "phone"], size=n_rows).astype(object)
    channel[rng.random(n_rows) < 0.15] = None
    age = rng.integers(18, 90, size=n_rows)
    visits = rng.poisson(3.0, size=n_rows)
    income = rng.normal(50_000, 15_000, size=n_rows).round(2)
    income_seen = rng.random(n_rows) >= 0.1
    score = (
        0.8 * (plan == "premium")
        + 0.4 * (plan == "plus")
        - 0.5 * (region == "south")
        + 0.3 * (channel == "web")
        + 0.25 * visits
        - 0.015 * (age - 50)
        + np.where(income_seen, (income - 50_000) / 30_000, 0.0)
        + rng.normal(0.0, 0.6, n_rows)
    )
    df = pd.DataFrame(
        {
            "plan": pd.Categorical(plan, categories=["basic", "plus", "premium"]),
            "region": region,
            "channel": channel,
            "age": age.astype("int64"),
            "visits": visits.astype("int64"),
            "income": np.where(income_seen, income, np.nan),
        }
    )
    if task == "regression":
        df["label"] = (100.0 + 40.0 * score).round(3)
    elif task == "multiclass":
        cuts = np.quantile(score, [0.4, 0.75])
        df["label"] = np.select(
            [score < cuts[0], score < cuts[1]], ["bronze", "silver"], "gold"
        )
    else:
        df["label"] = np.where(score > np.median(score), "churn", "stay")
    return df
