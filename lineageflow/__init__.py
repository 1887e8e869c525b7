"""lineageflow: retrain tabular models under Prefect with git + DVC lineage."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lineageflow")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0.0.0+unknown"
