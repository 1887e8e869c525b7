"""Errors a user can act on. Each message is one line: what is wrong, what to do."""

import os
import re


class LineageflowError(Exception):
    """Base class: str(error) is the one line the CLI prints."""


class ConfigError(LineageflowError):
    """params.yaml is missing, malformed or out of range."""


class WorkspaceError(LineageflowError):
    """The workspace path is not a usable git + DVC repository."""


class DataError(LineageflowError):
    """The dataset cannot be pulled, read or trained on."""


class RemoteUnreachable(DataError):
    """A data remote (DVC remote, Delta table's S3) did not answer or refused
    the credentials: nothing is known of what it holds."""


class TrackingError(LineageflowError):
    """MLflow cannot be reached or refused a call."""


class OrchestratorError(LineageflowError):
    """The Prefect API cannot be reached."""


class ArtifactStoreError(TrackingError):
    """The store behind MLflow's artifacts (S3, ...) cannot be reached."""


class LineageError(LineageflowError):
    """A lineage record is missing, malformed or was edited."""


class PromotionRefused(LineageflowError):
    """Lineage checks or the quality gate refused Staging; the version stays in None."""

    def __init__(self, message: str, version: str | None = None):
        super().__init__(message)
        self.version = version

    @classmethod
    def unless_passed(cls, checks, message: str, version: str | None) -> None:
        """Raise when a check failed; a tie with the champion only keeps the
        champion (the version stays in None, tagged why): no error."""
        failed = [c for c in checks if not c.passed]
        if failed and not all(c.tie for c in failed):
            raise cls(message, version=version)


class UserCodeError(LineageflowError):
    """The workspace's own model code (train.factory / train.features) cannot be used."""


class AttestationError(LineageflowError):
    """A model's signature or signed statements do not verify (or are missing)."""


class SigningKeyError(LineageflowError):
    """A signing or verifying key cannot be used."""


def one_line(exc: BaseException) -> str:
    """An exception as one line: a LineageflowError's own text, else its type
    and the first line of its message (200 characters at most)."""
    if isinstance(exc, LineageflowError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def permission_denied(what: str) -> TrackingError:
    """An MLflow server that knows the user but not their right to `what`."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "(none)")
    return TrackingError(
        f"MLflow refused {what} to user '{user}' (permission denied): train, "
        "register and promote as an identity that may (the team stack's pipeline: "
        "source .stack/env.sh)"
    )


def as_user_error(exc: BaseException) -> LineageflowError | None:
    """`exc` as a one-line error when a user can act on it, else None: lineageflow's
    own, and an MLflow 403 from any call (a reader's identity)."""
    if isinstance(exc, LineageflowError):
        return exc
    text = str(getattr(exc, "message", exc))
    denied = "error code 403" in text or (
        getattr(exc, "error_code", "") == "PERMISSION_DENIED"
    )
    if not denied:
        return None
    endpoint = re.search(r"endpoint (/\S+)", text)
    return permission_denied(endpoint.group(1) if endpoint else "a call")
