"""Whether a Prefect API answers: a GET of ``/health`` (milliseconds).

The local server's liveness (lineageflow.ops.localserver), and a configured
``PREFECT_API_URL`` checked before a command starts a flow: Prefect's client
otherwise fails at the flow's start with a 150-line traceback ending
``RuntimeError: Failed to reach API at …``.
"""

from __future__ import annotations

import httpx

from lineageflow.errors import OrchestratorError


def healthy(url: str, timeout: float = 2.0) -> bool:
    """The API at ``url`` (ending ``/api``) answers ``/health`` with 200."""
    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def check_answers(url: str, timeout: float = 5.0) -> str:
    """``url`` when the API there answers at all, else one line. Any HTTP answer
    counts (an API behind a proxy or Prefect Cloud may refuse an anonymous
    ``/health``): only a connection that fails or times out is refused."""
    url = url.rstrip("/")
    try:
        httpx.get(f"{url}/health", timeout=timeout)
    except httpx.TransportError as exc:
        raise OrchestratorError(
            f"Prefect API at {url} does not answer ({type(exc).__name__}): start "
            "that server (`prefect server start`, or `make stack`), or unset "
            "PREFECT_API_URL to use lineageflow's local one"
        ) from None
    return url
