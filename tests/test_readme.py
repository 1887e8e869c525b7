"""README's tables say what the code declares: the checks, and the modules; what
its commands create in the checkout is git-ignored."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from lineageflow.lineage import checks
from lineageflow.lineage.record import STAGES
from lineageflow.registry import gate, promotion  # noqa: F401 - declare the gate's checks

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n#", start + len(title))
    return README[start : end if end != -1 else None]


def table_rows(text: str) -> list[list[str]]:
    rows = [ln for ln in text.splitlines() if ln.startswith("| ")]
    cells = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in rows]
    return [c for c in cells[1:] if not set("".join(c)) <= set("-: ")]


def test_readme_checks_table_is_the_declared_checks():
    """Each row (name, what it refuses, the fix) is a declared check, in order."""
    rows = table_rows(section("### What the checks refuse, and how to fix each"))
    declared = [[f"`{d.name}`", d.refuses, d.fix] for d in checks.DECLARED]
    assert rows == declared


def test_every_declared_check_is_run_and_every_run_check_declared(tmp_path):
    """run_checks + the gate produce exactly the declared names, in that order."""
    record = {
        "workspace": {"commit": "a" * 40, "dirty": False},
        "pipeline": {"commit": "b" * 40, "dirty": False},
        "data": [],
        "params_sha256": "0",
    }

    class Nothing:
        def commit_exists(self, commit):
            return True

        def dvc_md5_at(self, commit, dvc_file):
            return None

        def in_remote(self, entry):
            return True

    finished = {s: ["FINISHED"] for s in checks.REQUIRED_STAGES}
    runs = checks.check_runs_complete("FINISHED", finished, True, True)
    found = checks.run_checks(record, {}, Nothing(), runs)
    cfg = promotion.EvaluateConfig(metric="roc_auc", threshold=0.5)
    found += promotion.gate({"roc_auc": 0.9}, cfg, lambda: (None, None))
    found.append(gate.check_signing_key(None, "k" * 64))  # decide() adds it last
    assert [c.name for c in found] == [d.name for d in checks.DECLARED]
    assert set(checks.REQUIRED_STAGES) <= set(STAGES)  # each one is recorded


def test_readme_layout_names_every_module_once():
    text = section("## Layout")
    named = re.findall(r"^\| `([\w/]+\.py)` \|", text, re.M)
    on_disk = sorted(
        str(p.relative_to(ROOT))
        for d in ("lineageflow", "flows", "tasks", "deployments")
        for p in (ROOT / d).rglob("*.py")
        if p.name != "__init__.py"
    )
    assert sorted(named) == on_disk
    assert len(named) == len(set(named))


def test_the_library_never_imports_flows_tasks_or_deployments():
    pattern = re.compile(r"^\s*(from|import) (flows|tasks|deployments)\b", re.M)
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "lineageflow").rglob("*.py")
        if pattern.search(p.read_text())
    ]
    assert offenders == []


def bash_lines() -> list[str]:
    blocks = re.findall(r"^ *```bash\n(.*?)^ *```", README, re.M | re.S)
    return [ln.split("#")[0].strip() for b in blocks for ln in b.splitlines()]


def dirs_made_by_make(target: str) -> set[str]:
    """The directories a Makefile target creates in the checkout: its ``--dir``
    arguments, and the venv of every target that needs it (defaults of ``?=``)."""
    makefile = (ROOT / "Makefile").read_text()
    defaults = dict(re.findall(r"^(\w+) \?= (\S+)$", makefile, re.M))
    rule = re.search(
        rf"^{re.escape(target)}:([^\n#]*)[^\n]*\n((?:\t[^\n]*\n)*)", makefile, re.M
    )
    assert rule, f"README runs `make {target}`, which the Makefile lacks"
    made = set(re.findall(r"--dir (\S+)", rule.group(2)))
    if "venv" in rule.group(1).split():
        made.add("$(VENV)")
    return {re.sub(r"\$\((\w+)\)", lambda m: defaults[m.group(1)], d) for d in made}


def test_every_directory_readme_commands_create_is_git_ignored():
    """`make demo`, `lineageflow demo --dir demo-delta` and the like build
    directories in the checkout: none may show up in `git status`."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    made: set[str] = set()
    for line in bash_lines():
        if re.search(r"\blineageflow demo\b", line):
            given = re.search(r"--dir (\S+)", line)
            made.add(given.group(1) if given else "demo")  # the command's default
        made |= {
            d for t in re.findall(r"^make ([\w-]+)", line) for d in dirs_made_by_make(t)
        }
    assert {"demo", "demo-delta", ".venv"} <= made  # the quickstart's, at least
    not_ignored = [
        d
        for d in sorted(made)
        if subprocess.run(
            ["git", "check-ignore", "--no-index", "-q", f"{d}/workspace/params.yaml"],
            cwd=ROOT,
        ).returncode
    ]
    assert not_ignored == []
