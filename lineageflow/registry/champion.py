"""The champion a challenger must beat: the newest signed promotion (not
whatever a stage or alias moved by hand points at), scored on this run's
holdout (a training run), or its own recorded holdout metrics (``lineageflow
promote``, where the holdout rows are not kept between runs)."""

from __future__ import annotations

from collections.abc import Callable

from lineageflow.attest.staging import champion as signed_champion
from lineageflow.engines import engine
from lineageflow.model import ml
from lineageflow.registry import versions
from lineageflow.runs.store import client

# () -> (the champion's metrics, its version); ValueError when it cannot be scored
Champion = Callable[[], tuple[dict[str, float] | None, str | None]]


def score_champion(tracking_uri: str, model_name: str, split: ml.Split):
    """Score the champion on *this* holdout (same rows, same labels)."""
    version = signed_champion(tracking_uri, model_name)
    if version is None:
        return None, None
    model = versions.load_native(f"models:/{model_name}/{version}", tracking_uri)
    try:
        return engine(split.engine).score(model, split), version
    except Exception as exc:  # e.g. the feature set changed between versions
        raise ValueError(
            f"Staging v{version} cannot score this holdout ({type(exc).__name__}: {exc})"
        ) from exc


def recorded_champion(tracking_uri: str, model_name: str, version: str) -> Champion:
    """The champion as its own recorded holdout metrics (``promote-model``: the
    holdout rows are not kept between runs), unless it is ``version`` itself."""

    def champion():
        champ = signed_champion(tracking_uri, model_name)
        if not champ or champ == version:
            return None, None
        champ_run = client(tracking_uri).get_model_version(model_name, champ).run_id
        return holdout_metrics(tracking_uri, champ_run), champ

    return champion


def holdout_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    """A run's holdout metrics as the gate names them (``roc_auc``)."""
    metrics = versions.recorded_metrics(tracking_uri, run_id)
    return {k.removeprefix("test_"): v for k, v in metrics.items()}


def identical_champion(
    tracking_uri: str,
    model_name: str,
    digest: str,
    train_key: str | None = None,
    version: str | None = None,
) -> str | None:
    """The champion (``version``, else the newest signed promotion's) this run's
    model is identical to, if any: the same model file (digest), or a fit of the
    same train stage key (the same input table, train params, code and
    libraries; a refit's pickle bytes may differ while the model is the same
    function of its inputs).

    A retrain on the same commit, data and params makes the very same model:
    registering it again would add a duplicate version and, on a tie, archive
    the champion for itself."""
    if not digest:
        return None
    version = version or signed_champion(tracking_uri, model_name)
    if version is None:
        return None
    their_digest, their_key = versions.version_identity(
        tracking_uri, model_name, version
    )
    same_fit = train_key is not None and their_key == train_key
    return version if (their_digest == digest or same_fit) else None
