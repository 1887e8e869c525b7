"""The data-kind registry: every kind implements the whole interface, config's
union takes each kind's entry, an entry of no kind is one line, and config
stays cheap to import (it imports every kind's module for its entry type)."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lineageflow.config import dataset_name, parse_params
from lineageflow.data.kind import DataKind
from lineageflow.data.kinds import KINDS, kind_for
from lineageflow.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# one params.yaml entry per kind: a new kind adds its own here
SAMPLES = {"dvc": "data/customers", "delta": {"delta": "/lake/customers"}}


def test_every_kind_implements_every_method_itself():
    assert set(SAMPLES) == set(KINDS), "give each registered kind a sample entry"
    for tag, kind in KINDS.items():
        cls = type(kind)
        assert isinstance(kind, DataKind) and not inspect.isabstract(cls)
        assert kind.tag == tag and kind.entry and kind.shape
        inherited = [m for m in DataKind.__abstractmethods__ if m not in vars(cls)]
        assert not inherited, f"{tag} kind leaves {inherited} to DataKind"


@pytest.mark.parametrize("tag", sorted(SAMPLES))
def test_the_union_takes_each_kinds_entry(tag):
    raw = SAMPLES[tag]
    cfg = parse_params({"data": {"datasets": [raw]}})
    (entry,) = cfg.data.datasets
    assert isinstance(entry, KINDS[tag].entry) and kind_for(entry) is KINDS[tag]
    assert cfg.as_dict()["data"]["datasets"][0] == (
        raw if isinstance(raw, str) else {**raw, "version": None, "timestamp": None}
    )
    assert dataset_name(entry) in str(raw)


@pytest.mark.parametrize("raw", [123, None, ["data/customers"]])
def test_an_entry_of_no_kind_is_refused_in_one_line(raw):
    with pytest.raises(ConfigError) as exc:
        parse_params({"data": {"datasets": [raw]}})
    assert str(exc.value) == (
        "params.yaml: 'data.datasets.0' is no dataset: give a DVC-tracked path "
        "(a string) or a Delta table ({delta: <path or URI>}) "
        f"(got {raw!r})"
    )


def test_no_isinstance_on_entry_types_outside_the_kinds():
    own = {ROOT / "lineageflow/data/dvc.py", ROOT / "lineageflow/data/delta.py"}
    ladder = re.compile(r"isinstance\([^)]*(DeltaEntry|\bstr\b)")
    for sub in ("lineageflow", "flows", "tasks"):
        for f in (ROOT / sub).rglob("*.py"):
            if f in own:
                continue
            for line in f.read_text().splitlines():
                if ladder.search(line) and ("entry" in line or "DeltaEntry" in line):
                    pytest.fail(f"{f.relative_to(ROOT)}: {line.strip()}")


def test_config_imports_no_data_library():
    code = (
        "import sys, lineageflow.config; "
        "print(sorted({'dvc', 'deltalake', 'pandas', 'git'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
