"""Tag keys, event keys and artifact names live in one module, lineageflow/tags.py:
each value once, each a ``lineage*`` key or an artifact name, and no product
file spells one out itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from lineageflow import tags

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_DIRS = ("lineageflow", "flows", "tasks", "deployments")
TAGS_FILE = Path("lineageflow/tags.py")
# a quoted string that starts like a tag key: "lineage.x", f'lineageflow.{k}'
LITERAL = re.compile(r"""(["'])(lineage(?:flow)?\.[^"'\s]*)\1?""")
# quoted lineage* strings that are not tag keys, each with its reason
ALLOWED = {
    # a module path run as `python -m` (the idle watcher of the local server)
    ("lineageflow/ops/localserver.py", "lineageflow.ops.localserver"),
}


def constants() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(tags).items()
        if name.isupper() and isinstance(value, str)
    }


def product_files() -> list[Path]:
    return sorted(
        p.relative_to(ROOT) for d in PRODUCT_DIRS for p in (ROOT / d).rglob("*.py")
    )


def test_every_constant_is_unique():
    found = constants()
    by_value: dict[str, list[str]] = {}
    for name, value in found.items():
        by_value.setdefault(value, []).append(name)
    assert len(found) > 50
    assert {v: n for v, n in by_value.items() if len(n) > 1} == {}


def test_every_value_is_a_lineage_key_or_an_artifact_name():
    odd = {
        name: value
        for name, value in constants().items()
        if not value.startswith("lineage") and value not in tags.ARTIFACTS
    }
    assert odd == {}
    for name in tags.ARTIFACTS:  # a name inside a run's artifacts, not a path
        assert re.fullmatch(r"[a-z_]+(\.[a-z]+)*", name), name


def test_the_tags_module_imports_nothing_of_lineageflow():
    """It is the bottom of the import graph: every module may import it."""
    tree = ast.parse((ROOT / TAGS_FILE).read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert [m for m in imported if m and m.split(".")[0] != "__future__"] == []


def test_no_product_file_spells_out_a_tag_key():
    """A key is named by its constant; a literal elsewhere could drift from it."""
    spelled = [
        (str(path), m.group(2))
        for path in product_files()
        if path != TAGS_FILE
        for m in LITERAL.finditer((ROOT / path).read_text())
        if (str(path), m.group(2)) not in ALLOWED
    ]
    assert spelled == []


def test_no_other_module_defines_a_tag_constant():
    pattern = re.compile(r"^(TAG_\w+)\s*=", re.M)
    defined = [
        (str(path), name)
        for path in product_files()
        if path != TAGS_FILE
        for name in pattern.findall((ROOT / path).read_text())
    ]
    assert defined == []
