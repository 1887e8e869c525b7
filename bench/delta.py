"""What reading a Delta table through lineageflow costs, against a bare script.

One run: a table of ROWS customer rows written as VERSIONS appends, then, REPS
times each and interleaved, (a) lineageflow's source: choose the latest
version, check its files are all present and identify it (table id, version,
file-list digest), then read it in file-path order; (b) the bare script a user
would write, ``DeltaTable(path).to_pandas()``. Ratios come from this one run.
Writes bench/DELTA.md.

    .venv/bin/python bench/delta.py            # BENCH_DELTA_ROWS=2000000 by default
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS = int(os.environ.get("BENCH_DELTA_ROWS", "2000000"))
VERSIONS = int(os.environ.get("BENCH_DELTA_VERSIONS", "5"))
REPS = int(os.environ.get("BENCH_REPS", "3"))


def main() -> None:
    from deltalake import DeltaTable, write_deltalake

    from lineageflow.data.delta import DeltaEntry
    from lineageflow.data.delta_table import DeltaTableSource
    from lineageflow.data.synthetic import make_customers

    with tempfile.TemporaryDirectory(prefix="lineageflow-bench-delta-") as tmp:
        table = Path(tmp) / "customers"
        per = ROWS // VERSIONS
        for v in range(VERSIONS):
            write_deltalake(
                table, make_customers(per, seed=v, drift=0.0), mode="append"
            )
        src = DeltaTableSource(None, DeltaEntry(delta=str(table)))
        pin, read, bare = [], [], []
        for rep in range(REPS + 1):  # the first round warms imports and caches
            t0 = time.perf_counter()
            version = src.pin()
            t1 = time.perf_counter()
            ours, _ = src.read(version)
            t2 = time.perf_counter()
            theirs = DeltaTable(table).to_pandas()
            t3 = time.perf_counter()
            assert len(ours) == len(theirs) == per * VERSIONS
            del ours, theirs
            if rep == 0:
                continue
            pin.append(t1 - t0)
            read.append(t2 - t1)
            bare.append(t3 - t2)
    total = [p + r for p, r in zip(pin, read, strict=True)]
    ratio = [t / b for t, b in zip(total, bare, strict=True)]
    med = statistics.median
    text = f"""# Delta read cost ({date.today().isoformat()})

`bench/delta.py`: {per * VERSIONS:,} rows in {VERSIONS} appended versions
({VERSIONS} Parquet files), {REPS} interleaved repetitions after a warm-up round, in one run; medians.

| | seconds | |
|---|---|---|
| lineageflow: choose + check + identify the version (`pin`) | {med(pin):.4f} | |
| lineageflow: read it in file-path order (`read`) | {med(read):.4f} | |
| bare script: `DeltaTable(path).to_pandas()` | {med(bare):.4f} | |
| **ratio** lineageflow (pin + read) / bare | **{med(ratio):.2f}** | runs: {", ".join(f"{r:.2f}" for r in ratio)} |
"""
    (ROOT / "bench" / "DELTA.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
