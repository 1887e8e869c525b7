"""Prefect tasks: thin declarations of the stages, each in the stage pattern.

The ML logic lives in ``lineageflow.model``; data in ``lineageflow.data``; each
stage's child run, digests and reuse in ``lineageflow.runs.stages``; the
promotion decision in ``lineageflow.registry.promotion``.
"""

from lineageflow.errors import LineageflowError


def retry_unless_user_error(task, task_run, state) -> bool:
    """Retry flaky I/O, never a bad-input error that would fail the same way again."""
    try:
        state.result()
    except LineageflowError:
        return False
    except Exception:
        return True
    return False
