"""One promotion at a time per model: a Prefect global concurrency limit across
machines (when a Prefect server is in use) and an exclusive file lock on this
machine, held by lineageflow.registry.promotion around read-champion -> decide
-> write, so two flows cannot both believe they beat the same champion.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import get_current_settings

from lineageflow.runs.store import redact_uri


@contextlib.contextmanager
def promotion_slot(model_name: str) -> Iterator[None]:
    """One promotion per model across machines, via a Prefect global concurrency
    limit of 1 when a Prefect server is in use (the file lock in
    ``promotion_lock`` covers one machine and the ephemeral API)."""
    if not get_current_settings().api.url:
        yield
        return

    name = f"lineageflow-promote-{model_name}"
    with get_client(sync_client=True) as pc:
        try:
            pc.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            # a missing limit would make `concurrency` a silent no-op
            with contextlib.suppress(ObjectAlreadyExists):
                pc.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
    with concurrency(name, occupy=1, timeout_seconds=900, strict=True):
        yield


@contextlib.contextmanager
def promotion_lock(tracking_uri: str, model_name: str) -> Iterator[None]:
    """Exclusive, cross-process lock for one model's promotions on this machine.

    The lock file sits next to a sqlite store (whose users share a filesystem)
    or in the temp dir for a server; runs spread across machines additionally
    go through a Prefect global concurrency limit (``promotion_slot``).
    """
    key = hashlib.sha256(
        f"{redact_uri(tracking_uri)}|{model_name}".encode()
    ).hexdigest()[:16]
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        base = Path(tracking_uri.removeprefix("sqlite:///")).parent
    else:
        base = Path(tempfile.gettempdir())
    path = base / f".lineageflow-promote-{key}.lock"
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
