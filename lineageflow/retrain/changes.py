"""What changed between the Staging version's lineage and a commit: pure.

A change is one dataset version, the params or the workspace's Python code.
Each becomes one ``lineageflow.data.changed`` event whose id is a function of
the workspace, the resource, the commit and the new version: the same change
seen twice is the same event, which Prefect drops the second time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lineageflow.lineage.record import change_key
from lineageflow.tags import (
    DATA_CHANGED_EVENT,
    LABEL_MODEL,
    LABEL_WORKSPACE,
    RESOURCE_CODE,
    RESOURCE_DATASET_PREFIX,
    RESOURCE_PARAMS,
)

__all__ = [
    "Change",
    "DataAt",
    "Head",
    "Staged",
    "change_key",
    "detect",
]

_NAMESPACE = uuid.UUID("6f1d8a52-3c1e-4c55-9d3f-7a0c2e9b1f40")


@dataclass(frozen=True)
class DataAt:
    """One dataset as a commit names it: a DVC md5, or a Delta table version."""

    name: str
    md5: str
    version: int | None = None  # a Delta table's version; None for DVC

    def label(self) -> str:
        return (
            f"v{self.version}" if self.version is not None else f"md5 {self.md5[:12]}"
        )


@dataclass(frozen=True)
class Head:
    """What a commit of the workspace would train on."""

    commit: str
    data: tuple[DataAt, ...]
    params_sha256: str
    code_files: tuple[str, ...] = ()  # Python files changed since the Staging commit

    def key(self) -> str:
        return change_key(
            self.commit, {d.name: d.md5 for d in self.data}, self.params_sha256
        )


@dataclass(frozen=True)
class Staged:
    """The current Staging version's lineage, as its run's tags hold it."""

    version: str
    run_id: str
    commit: str
    data: dict[str, str]  # dataset name -> md5
    params_sha256: str


@dataclass(frozen=True)
class Change:
    resource: str  # a dataset's name, "params" or "code"
    kind: str  # "data" | "params" | "code"
    commit: str
    reason: str  # one line: what changed, from what to what
    payload: dict = field(default_factory=dict)

    @property
    def resource_id(self) -> str:
        if self.kind == "data":
            return RESOURCE_DATASET_PREFIX + self.resource
        return {"params": RESOURCE_PARAMS, "code": RESOURCE_CODE}[self.kind]

    def event_id(self, workspace: str) -> uuid.UUID:
        """The same for the same change, however often it is seen."""
        version = self.payload.get("md5") or self.payload.get("params_sha256") or ""
        seed = "|".join((workspace, self.resource_id, self.commit, str(version)))
        return uuid.uuid5(_NAMESPACE, seed)

    def event(self, workspace: str, model: str) -> dict:
        """The event as Prefect's ``POST /events`` takes it."""
        return {
            "id": str(self.event_id(workspace)),
            "occurred": datetime.now(UTC).isoformat(),
            "event": DATA_CHANGED_EVENT,
            "resource": {
                "prefect.resource.id": self.resource_id,
                "prefect.resource.name": self.resource,
                LABEL_WORKSPACE: workspace,
                LABEL_MODEL: model,
            },
            "related": [],
            "payload": {"commit": self.commit, "workspace": workspace}
            | self.payload
            | {"reason": self.reason},
        }


def detect(head: Head, staged: Staged | None) -> list[Change]:
    """One change per dataset version, params or code the head has and the
    Staging version was not trained on (every dataset when nothing is staged)."""
    c = head.commit
    if staged is None:
        return [
            Change(
                d.name,
                "data",
                c,
                f"{d.name} {d.label()}: no Staging version yet",
                _data_payload(d, None),
            )
            for d in head.data
        ]
    changes = []
    for d in head.data:
        was = staged.data.get(d.name)
        if was != d.md5:
            before = f"md5 {was[:12]}" if was else "not in the Staging version"
            changes.append(
                Change(
                    d.name,
                    "data",
                    c,
                    f"{d.name} {d.label()} (Staging v{staged.version}: {before})",
                    _data_payload(d, was),
                )
            )
    if head.params_sha256 != staged.params_sha256:
        changes.append(
            Change(
                "params",
                "params",
                c,
                f"params sha256 {head.params_sha256[:12]} (Staging "
                f"v{staged.version}: {staged.params_sha256[:12]})",
                {"params_sha256": head.params_sha256, "was": staged.params_sha256},
            )
        )
    if head.code_files:
        shown = ", ".join(head.code_files[:5])
        more = (
            f" and {len(head.code_files) - 5} more" if len(head.code_files) > 5 else ""
        )
        changes.append(
            Change(
                "code",
                "code",
                c,
                f"code {shown}{more} changed since {staged.commit[:12]} "
                f"(Staging v{staged.version})",
                {"files": list(head.code_files), "was": staged.commit},
            )
        )
    return changes


def _data_payload(d: DataAt, was: str | None) -> dict:
    out = {"dataset": d.name, "md5": d.md5, "was": was}
    if d.version is not None:
        out["version"] = d.version
    return out
