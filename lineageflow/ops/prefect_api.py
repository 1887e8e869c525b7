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
    signed_in(url, timeout)
    return url


def signed_in(url: str, timeout: float = 5.0) -> None:
    """A server behind ``PREFECT_SERVER_API_AUTH_STRING`` answers ``/health`` to
    anyone and 401 to everything else without ``PREFECT_API_AUTH_STRING``."""
    import base64

    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

    if PREFECT_API_KEY.value():
        return  # Prefect Cloud: a key, not an auth string
    auth = PREFECT_API_AUTH_STRING.value()  # a str here, a SecretStr in settings
    auth = getattr(auth, "get_secret_value", lambda: auth)()
    headers = {}
    if auth:  # as Prefect's client sends it: the whole string, base64
        headers["Authorization"] = f"Basic {base64.b64encode(auth.encode()).decode()}"
    try:
        resp = httpx.get(f"{url}/admin/version", timeout=timeout, headers=headers)
    except httpx.HTTPError:
        return  # answered /health: let Prefect's client say what else is wrong
    if resp.status_code == 401:
        raise OrchestratorError(
            f"Prefect API at {url} refused the credentials: set "
            "PREFECT_API_AUTH_STRING to its auth string (the team stack's env.sh "
            "has it; reader.env.sh has none: the reader may not run flows)"
        )
