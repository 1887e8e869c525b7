"""The ``compute`` section of params.yaml: where the tables live and where the
split, the digests, the fit and the scores run (lineageflow.engines).

A section of lineageflow.config.PipelineConfig, so it imports nothing heavy.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

# a team's cluster, named by the worker's environment (a work pool's job
# variables): overrides ``compute.address``
ADDRESS_ENV = "LINEAGEFLOW_DASK_ADDRESS"
BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|[KMGT]i?B)\s*$", re.IGNORECASE)
UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """'4GiB' -> 4294967296; a malformed size raises ValueError."""
    m = BYTES_RE.match(text)
    if not m:
        raise ValueError(
            f"memory_limit {text!r} is no size: write it like 4GiB or 512MiB"
        )
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def without_credentials(address: str | None) -> str | None:
    """``tcp://user:secret@host:8786`` as ``tcp://host:8786``: what is recorded."""
    if not address or "@" not in address:
        return address
    parts = urlsplit(address)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class ComputeConfig(BaseModel):
    # as lineageflow.config's sections: a typo is an error, a section a value
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    engine: Literal["local", "dask"] = "local"
    # a running scheduler (tcp://host:8786); None: a LocalCluster for the run
    address: str | None = None
    workers: Annotated[int, Field(ge=1, le=256)] = 2  # LocalCluster only
    threads_per_worker: Annotated[int, Field(ge=1, le=256)] = 1
    memory_limit: str = "4GiB"  # per worker, LocalCluster only

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_bytes(v)
        return v.strip()

    @field_validator("address")
    @classmethod
    def _scheduler(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if "://" not in v:
            raise ValueError(
                "address must be a scheduler URL like tcp://dask.internal:8786 "
                "(or null for a LocalCluster of the run)"
            )
        return v.strip()

    def scheduler(self) -> str | None:
        """The scheduler this run connects to: $LINEAGEFLOW_DASK_ADDRESS, else
        ``address``; None: start a LocalCluster."""
        return os.environ.get(ADDRESS_ENV, "").strip() or self.address

    def is_default(self) -> bool:
        return self == ComputeConfig()
