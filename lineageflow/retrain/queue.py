"""Triggered retrains, scheduled retrains and audits of one workspace run one at
a time, in arrival order.

A Prefect global concurrency limit of 1 per workspace (``lineageflow-retrain-``
and a hash of its path: Prefect's UI, Concurrency), held by each run for a
commit while it checks "already trained" and trains, by a nightly retrain
(``skip_if_unchanged``) while it checks and trains, and by an audit
(flows/audit.py) while it re-proves the registry. A second event for the
same change waits, then finds the first run and ends at once. Not a limit on
the ``train`` deployment itself: a worker killed mid-run would hold that slot
until Prefect's 5-minute lease expires and block even a hand-started run.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from lineageflow.runs.orchestration import run_logger


def limit_name(root: Path) -> str:
    return "lineageflow-retrain-" + hashlib.sha256(str(root).encode()).hexdigest()[:12]


@contextlib.contextmanager
def one_at_a_time(root: Path) -> Iterator[None]:
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, PrefectHTTPStatusError

    name = limit_name(root)
    # another run may make it at the same moment
    with (
        get_client(sync_client=True) as c,
        contextlib.suppress(ObjectAlreadyExists, PrefectHTTPStatusError),
    ):
        c.upsert_global_concurrency_limit_by_name(name, 1)
    run_logger().info("waiting for the retrain slot %s (one run at a time)", name)
    with concurrency(name, occupy=1, strict=True):
        yield
