"""The checks a version passes before promotion, each a declared unit.

A check returns a ``Check`` (pass/fail, a reason a person can act on) and is
declared with ``@declare(name, refuses, fix)``; README's table "What the checks
refuse" is tested against ``DECLARED`` (tests/test_readme.py), in whose order the
tags and the flow's message list them. Checks read only the record, the run's tags
and the evidence handed to them (lineageflow.lineage.evidence; data and environment
rules: the data sources, lineageflow.lineage.pins)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lineageflow.data import source
from lineageflow.lineage.evidence import Evidence
from lineageflow.lineage.pins import pinned_check
from lineageflow.lineage.record import digest, flat_tags
from lineageflow.pipeline import REQUIRED
from lineageflow.tags import LINEAGE_JSON, TAG_DIGEST

# the stages whose finished child runs a promotable run must have (register_model
# is still running while the checks run)
REQUIRED_STAGES = REQUIRED  # declared in lineageflow.pipeline


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    reason: str
    # a tie with the champion: not promoted, but not an error either (the
    # champion simply stays); every other failed check fails the flow run
    tie: bool = False

    def tag_value(self) -> str:
        return "passed" if self.passed else f"failed: {self.reason}"


@dataclass(frozen=True)
class Declared:
    """What a check is for, as README's table states it."""

    name: str
    refuses: str  # "refuses when ..."
    fix: str


DECLARED: list[Declared] = []


def declare(name: str, refuses: str, fix: str) -> Callable:
    """Declare a check: its name, what it refuses and the fix (README's row)."""
    DECLARED.append(Declared(name, refuses, fix))

    def mark(fn: Callable) -> Callable:
        fn.declared = DECLARED[-1]
        return fn

    return mark


@declare(
    "clean_tree",
    "the workspace had uncommitted or untracked files at run time",
    "commit or stash them, retrain",
)
def check_clean_tree(record: dict) -> Check:
    ws = record["workspace"]
    if not ws["dirty"]:
        return Check("clean_tree", True, f"tree clean at {ws['commit'][:12]}")
    files = ", ".join(ws.get("dirty_files", [])[:5]) or "uncommitted changes"
    return Check(
        "clean_tree",
        False,
        f"workspace had uncommitted changes at run time ({files}): commit or stash "
        "them and retrain",
    )


@declare(
    "code_committed",
    "the lineageflow code had uncommitted changes (files named), or a workspace "
    "code file of `train.factory`/`train.features`/`train.notebook` was not "
    "committed (a notebook: its first changed code cell)",
    "commit it, retrain",
)
def check_code_committed(record: dict) -> Check:
    """The code that trained the model is in a commit: the pipeline checkout was
    clean and every workspace code file named in params.yaml was committed."""
    pipe = record["pipeline"]
    problems = []
    if pipe.get("dirty"):
        files = ", ".join(pipe.get("dirty_files", [])[:5]) or "uncommitted changes"
        problems.append(
            f"lineageflow code at {str(pipe.get('commit'))[:12]} had uncommitted "
            f"changes ({files}): commit them in the lineageflow repo and retrain"
        )
    for u in record.get("user_code", []):
        if not u.get("committed"):
            state = (
                "is not in git" if u.get("blob") is None else "has uncommitted edits"
            )
            if u.get("changed_cell"):  # a notebook: its code cells, by number
                state = f"differs from the commit at code cell {u['changed_cell']}"
            problems.append(
                f"workspace code {u['file']} (train.{u['role']}) {state}: "
                "commit it and retrain"
            )
    if problems:
        return Check("code_committed", False, "; ".join(problems))
    if pipe.get("commit"):
        where = f"lineageflow @ {pipe['commit'][:12]}"
    else:
        where = f"installed lineageflow {pipe.get('version')} (no checkout)"
    n = len(record.get("user_code", []))
    extra = f" and {n} workspace code file(s)" if n else ""
    return Check("code_committed", True, f"{where}{extra} committed")


@declare(
    "environment_pinned",
    "an imported library was editable from a dirty checkout, installed from a VCS "
    "URL without a commit id, or copied from a local directory by pip install",
    "commit, push, `pip install 'name @ git+URL@<commit>'` or release it; retrain",
)
def check_environment_pinned(record: dict) -> Check:
    return Check("environment_pinned", *pinned_check(record))


@declare(
    "commit_exists",
    "the recorded commit is not in the workspace repo (history rewritten)",
    "push or restore the commit",
)
def check_commit_exists(record: dict, ev: Evidence) -> Check:
    commit = record["workspace"]["commit"]
    if ev.commit_exists(commit):
        return Check("commit_exists", True, f"commit {commit[:12]} exists")
    return Check(
        "commit_exists",
        False,
        f"recorded commit {commit[:12]} is not in the workspace repo (history "
        "rewritten?): push or restore it",
    )


@declare(
    "data_matches_commit",
    "a recorded md5 differs from the `.dvc` file at the recorded commit, or "
    "`params.yaml` there does not name the Delta table (or pins another version)",
    "commit the `.dvc` files and `params.yaml` the run used",
)
def check_data_matches_commit(record: dict, ev: Evidence) -> Check:
    bad = source.at_commit_mismatches(record, ev)
    if not bad:
        return Check(
            "data_matches_commit",
            True,
            "every data version matches its pointer at commit",
        )
    return Check(
        "data_matches_commit",
        False,
        "; ".join(bad) + ": commit the .dvc files that the run used",
    )


@declare(
    "data_in_remote",
    "a data version is not in its DVC remote (nobody else could `dvc pull` it), or "
    "a Delta version can no longer be read: `VACUUM` removed its files, its log "
    "entry expired, or the table was deleted and re-created (another table id)",
    "`dvc push`, then `lineageflow promote <model> <version>`; for Delta, keep "
    "versions (`vacuum(keep_versions=...)`) or retrain",
)
def check_data_in_remote(record: dict, ev: Evidence) -> Check:
    missing = source.not_in_remote(record, ev)
    if not missing:
        return Check("data_in_remote", True, "every data version can be read again")
    d = missing[0]
    if d["remote"] is None:
        return Check("data_in_remote", False, source.not_pushed_fix(d))
    names = ", ".join(m["path"] for m in missing)
    return Check(
        "data_in_remote",
        False,
        f"{names} md5 {d['md5'][:12]} {source.not_pushed_fix(d)}",
    )


@declare(
    "data_read_matches",
    "the data read differs from its `.dvc` md5 (changed while read: pull_data refuses "
    "an earlier edit before the fit), or a Delta version's files differ from its log",
    "`dvc add <path>` and commit, or `dvc checkout <path>`",
)
def check_data_read(record: dict) -> Check:
    bad = source.read_problems(record)
    if not bad:
        return Check(
            "data_read_matches", True, "the data read matched every recorded version"
        )
    return Check("data_read_matches", False, bad[0])


@declare(
    "digest_intact",
    "`lineage.json` or a `lineage.*` tag was edited after the run",
    "retrain",
)
def check_digest(record: dict, tags: dict[str, str]) -> Check:
    want = tags.get(TAG_DIGEST)
    got = digest(record)
    if want != got:
        return Check(
            "digest_intact",
            False,
            f"{LINEAGE_JSON} digest {got[:12]} != tag {TAG_DIGEST} "
            f"{str(want)[:12]}: the record or tag was edited after the run; retrain",
        )
    # a flat tag absent from the run claims nothing (runs made before that tag
    # existed stay verifiable); one that is present must agree with the record
    edited = sorted(
        k for k, v in flat_tags(record).items() if k in tags and tags[k] != v
    )
    if edited:
        return Check(
            "digest_intact",
            False,
            f"tag {edited[0]} differs from lineage.json (edited after the run): "
            "retrain",
        )
    return Check("digest_intact", True, f"digest {got[:12]} intact")


@declare(
    "runs_complete",
    "a stage's child run did not finish, or the model or its input schema (MLflow "
    "signature) is missing",
    "retrain",
)
def check_runs_complete(
    parent_status: str,
    child_status: dict[str, list[str]],
    has_model: bool,
    has_signature: bool,
    parent_in_progress: bool = False,
) -> Check:
    ok_parent = {"FINISHED", "RUNNING"} if parent_in_progress else {"FINISHED"}
    problems = []
    if parent_status not in ok_parent:
        problems.append(f"parent run is {parent_status}")
    for stage in REQUIRED_STAGES:
        statuses = child_status.get(stage, [])
        if not statuses:
            problems.append(f"no {stage} child run")
        elif any(s != "FINISHED" for s in statuses):
            problems.append(f"{stage} child run is {','.join(statuses)}")
    if not has_model:
        problems.append("no model artifact")
    elif not has_signature:
        problems.append("model has no input schema (MLflow signature)")
    if not problems:
        return Check(
            "runs_complete",
            True,
            "parent and child runs finished; model and its schema logged",
        )
    return Check(
        "runs_complete", False, "; ".join(problems) + ": retrain to get a complete run"
    )


def run_checks(
    record: dict,
    tags: dict[str, str],
    ev: Evidence,
    runs_check: Check,
) -> list[Check]:
    """The lineage checks, in declared order (the quality gate follows them:
    lineageflow.registry.gate)."""
    return [
        check_clean_tree(record),
        check_code_committed(record),
        check_environment_pinned(record),
        check_commit_exists(record, ev),
        check_data_matches_commit(record, ev),
        check_data_in_remote(record, ev),
        check_data_read(record),
        check_digest(record, tags),
        runs_check,
    ]


def summary_line(checks: Iterable[Check]) -> str:
    failed = [c for c in checks if not c.passed]
    if not failed:
        return "all lineage checks passed"
    return "; ".join(f"{c.name}: {c.reason}" for c in failed)
