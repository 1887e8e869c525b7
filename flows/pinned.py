"""Run the pipeline stages with *recorded* lineageflow code, in a subprocess.

Python cannot import two versions of one package side by side, so the recorded
commit's code (a checkout made by lineageflow.reproduce.reproduction) runs in a child
process of this same interpreter, with the checkout first on ``PYTHONPATH``
(the editable install's finder comes after the path, so the checkout wins).
The child calls that commit's ``flows.training.run_stages`` — a contract kept
stable across commits — inside a flow of its own, and reports the run id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lineageflow import errors
from lineageflow.checkouts import last_line
from lineageflow.errors import LineageError
from lineageflow.pipeline import REGISTER_MODEL

# Runs inside the recorded code: keep it to the API every commit since
# reproduction exists has (run_stages with these keyword arguments).
DRIVER = r"""
import json, sys
from pathlib import Path
spec = json.loads(Path(sys.argv[1]).read_text())
out = Path(spec["out"])
try:
    from prefect import flow
    from flows.training import run_stages
    from lineageflow.config import parse_params
    from lineageflow.workspace import Workspace

    @flow(name="reproduce-run-recorded-code", log_prints=True)
    def reproduce_with_recorded_code():
        result = run_stages(
            Workspace(Path(spec["workspace"])),
            parse_params(spec["params"], source="recorded params"),
            spec["tracking_uri"],
            register=spec["register"],
            run_name=spec["run_name"],
            extra_tags=spec["tags"],
            expect_data=spec["data"],
        )
        return result.run_id

    out.write_text(json.dumps({"run_id": reproduce_with_recorded_code()}))
except BaseException as exc:
    out.write_text(json.dumps({"error": str(exc), "type": type(exc).__name__}))
    raise SystemExit(1)
"""


def run_recorded_code(
    code: Path,
    workspace: Path,
    record: dict,
    tracking_uri: str,
    run_name: str,
    tags: dict[str, str],
    log=print,
) -> str:
    """Rerun ``record`` with the lineageflow checkout ``code``; return the new run id."""
    from prefect.settings import get_current_settings

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(code), env.get("PYTHONPATH")) if p
    )
    api = get_current_settings().api.url
    if api:  # share this flow's Prefect server instead of starting a temporary one
        env["PREFECT_API_URL"] = api
    commit = (record.get("pipeline") or {}).get("commit") or "?"
    with tempfile.TemporaryDirectory(prefix="lineageflow-pinned-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(
            json.dumps(
                {
                    "workspace": str(workspace),
                    "params": record["params"],
                    "tracking_uri": tracking_uri,
                    "run_name": run_name,
                    "tags": tags,
                    "data": record["data"],
                    # a reproduction registers nothing unless declared to
                    "register": REGISTER_MODEL.reproduced,
                    "out": str(out),
                }
            )
        )
        log(f"running the recorded lineageflow code {commit[:12]} from {code}")
        proc = subprocess.run(
            [sys.executable, "-c", DRIVER, str(spec)],
            cwd=code,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        answer = json.loads(out.read_text()) if out.is_file() else {}
    if proc.returncode == 0 and answer.get("run_id"):
        return answer["run_id"]
    kind = getattr(errors, answer.get("type", ""), None)
    if isinstance(kind, type) and issubclass(kind, errors.LineageflowError):
        raise kind(answer["error"])  # the user error the recorded code named
    why = answer.get("error") or last_line(proc.stderr)
    raise LineageError(
        f"the recorded lineageflow code {commit[:12]} failed to rerun: "
        f"{why.splitlines()[0][:400] if why else 'no output'}"
    )
