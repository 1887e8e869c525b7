"""What a recorded distribution promises (lineageflow.lineage.environment
records them): whether anyone could install it again as it ran (the check
environment_pinned), how it reads in a diff or a verdict, and what names its
code in the stage reuse basis. Pure functions of the record's entries."""

from __future__ import annotations

from lineageflow.lineage.environment import PIPELINE_DIST, canonical


def _pin_hint(d: dict) -> str:
    return f"pip install '{d['name']} @ git+<url>@<commit>'"


def unpinned(d: dict) -> str | None:
    """Why nobody could install distribution ``d`` again as it ran (None: they can)."""
    name, source = d["name"], d.get("source")
    if source == "vcs" and not d.get("commit_id"):
        return (
            f"{name} was installed from {d.get('url')} with no commit id: install it "
            f"by commit ({_pin_hint(d)}) and retrain"
        )
    if source == "dir":  # pip copied it: no commit is known to hold what it copied
        return (
            f"{name} was installed from the directory {d.get('path')}, which no "
            f"commit names: install it by commit: pip install '{name} @ "
            "git+…@<commit>', or release it to your package index"
        )
    if source != "editable":
        return None
    where = f"{name} is editable from {d.get('path')}"
    if not d.get("commit"):
        return (
            f"{where}, which no git commit holds: commit and push it, install it "
            f"by commit ({_pin_hint(d)}) and retrain"
        )
    if d.get("dirty"):
        files = ", ".join(d.get("dirty_files", [])[:5])
        return (
            f"{where} with uncommitted changes ({files}) on {d['commit'][:12]}: "
            f"commit and push them, install it by commit ({_pin_hint(d)}) and retrain"
        )
    return None


def pinned_check(record: dict) -> tuple[bool, str]:
    """The check environment_pinned: every distribution the run imported can be
    installed again as it ran. lineageflow itself is code_committed's (see
    PIPELINE_DIST): a dirty checkout of it is reported once, there."""
    env = record.get("environment", {})
    if "distributions" not in env:
        return True, "recorded by older code: no distributions to check"
    used = set(env.get("imported", []))
    dists = [
        d
        for d in env["distributions"]
        if canonical(d["name"]) in used and canonical(d["name"]) != PIPELINE_DIST
    ]
    problems = [p for p in map(unpinned, dists) if p]
    if problems:
        return False, "; ".join(problems)
    by_commit = [d["name"] for d in dists if d.get("source") != "index"]
    extra = f", {', '.join(by_commit)} by commit or content" if by_commit else ""
    return True, f"{len(dists)} imported distributions pinned{extra}"


def private_identity(dists: list[dict]) -> list[str] | None:
    """What names the code of every library installed from a VCS URL, an
    editable checkout or a local directory (lineageflow aside: the pipeline
    commit is in the reuse basis already), for the stage reuse basis: a library
    at another commit is another model. Archives (``pip install /wheels/*.whl``)
    are left out: a release's version names it, as for an index's. None when one
    is named by nothing (a dirty checkout, a VCS install without a commit id):
    no basis, no reuse. The basis is made before the run imports anything, so
    every such install counts, imported by the run or not."""
    out = []
    for d in dists:
        source = d.get("source")
        if source not in ("vcs", "editable", "dir") or d.get("pipeline"):
            continue
        if source == "editable" and canonical(d["name"]) == PIPELINE_DIST:
            continue
        named = {
            "vcs": d.get("commit_id"),
            "editable": d.get("commit") and d.get("dirty") is False,
            "dir": d.get("sha256"),
        }[source]
        if not named:
            return None
        out.append(f"{canonical(d['name'])} {label(d)}")
    return out


def label(d: dict | None) -> str:
    """A distribution as one diff cell: version, and how it was installed."""
    if d is None:
        return "None"
    source, version = d.get("source"), d["version"]
    if source == "vcs":
        return f"{version} {d.get('vcs')}@{str(d.get('commit_id'))[:12]}"
    if source == "editable" and not d.get("pipeline"):
        dirty = " (dirty)" if d.get("dirty") else ""
        return f"{version} editable@{str(d.get('commit'))[:12]}{dirty}"
    if source in ("dir", "archive"):
        return f"{version} {source} sha256 {str(d.get('sha256'))[:12]}"
    return version


def differences(a: dict, b: dict) -> list[str] | None:
    """Each distribution imported by either run (or listed in ``packages``) that
    differs in version, commit or content, named; None when a record predates
    ``distributions``. lineageflow by version only: its code is the pipeline's."""
    if "distributions" not in a or "distributions" not in b:
        return None
    da = {canonical(d["name"]): d for d in a["distributions"]}
    db = {canonical(d["name"]): d for d in b["distributions"]}
    names = {*a.get("imported", []), *b.get("imported", [])}
    names |= {canonical(n) for n in (*a.get("packages", {}), *b.get("packages", {}))}
    out = []
    for name in sorted(names):
        la, lb = label(da.get(name)), label(db.get(name))
        if la != lb:
            shown = (da.get(name) or db.get(name))["name"]
            out.append(f"{shown} {la} -> {lb}")
    return out
