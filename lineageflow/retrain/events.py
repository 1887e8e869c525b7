"""Send change events to the Prefect server the flow runs against.

Through the API's ``POST /events`` rather than ``emit_event``: that returns
None without a word when no API is configured, and sends in the background,
so a run could report events that never arrived. Here a refusal fails the run.
"""

from __future__ import annotations

from lineageflow.errors import LineageflowError


def api_url(run_as: str = "`prefect deployment run watch-workspace/watch`") -> str:
    """The Prefect API the events go to: a real server, whose automations
    (the ``train`` deployment's trigger) react to them."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise LineageflowError(
            f"no Prefect server to send events to: run it as its deployment "
            f"({run_as}) or set PREFECT_API_URL"
        )
    return url


def send(
    events: list[dict], again: str = "the next watch run sends them again"
) -> None:
    """Post the events; one line when the server refuses or does not answer
    (``again``: what happens to the events then)."""
    if not events:
        return
    from prefect.client.orchestration import get_client

    url = api_url("`prefect deployment run` of the flow")
    try:
        with get_client(sync_client=True) as c:
            resp = c.request("POST", "/events", json=events)
        resp.raise_for_status()
    except Exception as exc:  # httpx errors, a 4xx/5xx: the run fails, next retries
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise LineageflowError(
            f"Prefect at {url} did not take {len(events)} change event(s) "
            f"({type(exc).__name__}{': ' + detail if detail else ''}): {again}"
        ) from None
