"""Prefect tasks: thin wrappers that do the I/O, the tracking and the retries.

The ML logic lives in ``lineageflow.model.ml``; runs are opened only through
``lineageflow.runs.tracking``; lineage is built and checked only in ``lineageflow.lineage.record``.
"""


def retry_unless_user_error(task, task_run, state) -> bool:
    """Retry flaky I/O, never a bad-input error that would fail the same way again."""
    from lineageflow.errors import LineageflowError

    try:
        state.result()
    except LineageflowError:
        return False
    except Exception:
        return True
    return False
