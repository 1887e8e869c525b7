"""Workspace validation on real directories and git repos."""

import os

import git
import pytest
import yaml

from lineageflow.errors import WorkspaceError
from lineageflow.workspace import check_commit_sha, git_state, open_workspace


def test_missing_path(tmp_path):
    with pytest.raises(WorkspaceError, match=r"does not exist"):
        open_workspace(tmp_path / "nope")


def test_not_a_git_repo(tmp_path):
    with pytest.raises(
        WorkspaceError, match=r"is not a git repository: run `git init`"
    ):
        open_workspace(tmp_path)


def test_subfolder_of_a_repo_names_the_root_not_git_init(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    git.Repo.init(tmp_path)
    (tmp_path / ".dvc").mkdir()
    sub = tmp_path / "data" / "more"
    sub.mkdir(parents=True)
    root, inner = tmp_path.resolve(), sub.resolve()
    message = (
        f"workspace {inner} is inside the git repository {root}: "
        "pass the repository root"
    )
    with pytest.raises(WorkspaceError) as err:
        open_workspace(sub)
    assert str(err.value) == message
    # the command says it in one line, before Prefect or MLflow start
    lf = str(Path(sys.executable).parent / "lineageflow")
    proc = subprocess.run(
        [lf, "train", str(sub)], capture_output=True, text=True, timeout=120
    )
    assert (proc.returncode, proc.stderr) == (2, f"error: {message}\n")


def test_git_repo_without_dvc(tmp_path):
    git.Repo.init(tmp_path)
    with pytest.raises(WorkspaceError, match=r"has no DVC: run `dvc init`"):
        open_workspace(tmp_path)


def test_dataset_paths_cannot_escape(make_workspace, tmp_path):
    ws = open_workspace(make_workspace().workspace)
    with pytest.raises(WorkspaceError, match=r"resolves outside the workspace"):
        ws.dataset("../../etc/passwd")
    os.symlink("/etc", ws.root / "data" / "out")
    with pytest.raises(WorkspaceError, match=r"resolves outside the workspace"):
        ws.dataset("data/out/passwd")
    with pytest.raises(
        WorkspaceError, match=r"has no .dvc file .*run `dvc add data/other`"
    ):
        ws.dataset("data/other")


def test_git_state_sees_untracked_files_and_credentials_are_stripped(make_workspace):
    root = make_workspace().workspace
    repo = git.Repo(root)
    repo.create_remote("origin", "https://user:s3cret@example.invalid/ws.git")
    state = git_state(repo)
    assert not state.dirty and state.repo == "https://example.invalid/ws.git"
    (root / "notes.txt").write_text("x")
    state = git_state(repo)
    assert state.dirty and state.dirty_files == ["notes.txt"]


@pytest.mark.parametrize(
    "bad", ["--upload-pack=evil", "../x", "HEAD", "a" * 39, "; rm -rf /"]
)
def test_commit_sha_validation(bad):
    with pytest.raises(WorkspaceError, match=r"not a 40-character git sha"):
        check_commit_sha(bad)


def test_evidence_refuses_option_injection_and_path_escape(make_workspace):
    from lineageflow.lineage.evidence import LiveEvidence

    root = make_workspace().workspace
    ev = LiveEvidence(root)
    head = git.Repo(root).head.commit.hexsha
    assert ev.commit_exists(head)
    assert ev.dvc_md5_at(head, "data/customers.dvc").endswith(".dir")
    for bad in ("--upload-pack=touch /tmp/pwned", "-h", "HEAD", "a" * 40):
        assert not ev.commit_exists(bad)
    for path in ("../../etc/passwd", "/etc/passwd", "--output=/tmp/x"):
        assert ev.dvc_md5_at(head, path) is None


def test_git_reads_at_a_commit_refuse_option_like_revs_and_escaping_paths(
    make_workspace,
):
    from lineageflow.checkouts import has_commit
    from lineageflow.workspace import commit_exists, file_at, resolve_commit

    root = make_workspace().workspace
    repo = git.Repo(root)
    head = repo.head.commit.hexsha
    assert resolve_commit(repo, "HEAD") == head and commit_exists(repo, head)
    assert has_commit(root, head) and not has_commit(root / "nope", head)
    assert "outs" in file_at(repo, head, "data/customers.dvc")
    assert file_at(repo, head, "no/such/file") is None
    for bad in ("--upload-pack=touch /tmp/pwned", "-h", "0" * 40, ""):
        assert resolve_commit(repo, bad) is None and not commit_exists(repo, bad)
        assert not has_commit(root, bad) and file_at(repo, bad, "params.yaml") is None
    for path in ("../../etc/passwd", "/etc/passwd", "--output=/tmp/x"):
        assert file_at(repo, head, path) is None


def test_a_worktree_shares_the_main_cache_and_its_directory_listings(
    make_workspace, tmp_path
):
    """DVC 3 keeps objects under ``<cache dir>/files/md5``: a worktree restored
    for a reproduction reads the main repo's objects (nothing pulled twice), and
    a directory version's listing is found there."""
    from dvc.repo import Repo

    from lineageflow.data.dvc_files import dir_listing, dir_md5, restore

    root = make_workspace().workspace
    md5 = yaml.safe_load((root / "data/customers.dvc").read_text())["outs"][0]["md5"]
    listing = dir_listing(root, md5)
    assert listing is not None and list(listing) == ["part-000.csv"]
    assert dir_md5(listing) == md5
    tree = tmp_path / "tree"
    git.Repo(root).git.worktree("add", "--detach", str(tree))
    restore(tree, [], root)
    with Repo(str(tree)) as wt, Repo(str(root)) as main:
        assert wt.cache.local.path == main.cache.local.path
