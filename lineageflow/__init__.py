"""lineageflow: retrain tabular models under Prefect with git + DVC lineage."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lineageflow")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0.0.0+unknown"


def load_verified(model_uri: str, public_key, tracking_uri: str | None = None):
    """The pyfunc model at ``model_uri`` (``models:/NAME@staging``), loaded only
    after its files, its signed lineage and its promotion verify with
    ``public_key`` (a PEM path); see lineageflow.attest.verify."""
    from lineageflow.attest.verify import load_verified as load  # lazy: no import work

    return load(model_uri, public_key, tracking_uri)
