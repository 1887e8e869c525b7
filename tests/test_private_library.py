"""A private library inside the guarantee, end to end on real git, pip, DVC,
MLflow and Prefect.

The library is made here: a git repo holding a tiny package, ``acme_features``,
with a 30-line PEP 517/660 build backend of its own (the project's setuptools
builds no wheels without ``wheel``, and a test must not need the network). It
writes no top_level.txt, and its editable wheel holds only a ``.pth``, as
hatchling's, flit's, pdm's and poetry's do: nothing in the dist-info of an
editable install names the module it makes importable. It is installed by
pip into a venv this module owns (``--without-pip``; a ``.pth`` adds the
project venv's site-packages, so nothing else is reinstalled), and the
workspace's ``train.features`` imports it. The pipeline's CLI runs in that
venv's python, with the lineageflow code under test on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import re
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import git
import pytest
from mlflow import MlflowClient

from lineageflow.runs.artifact_store import download
from lineageflow.tags import (
    TAG_REPRODUCED_BY,
    TAG_REPRODUCTION_VERDICT,
    TAG_STAGE,
    TAG_STAGE_KEY,
)
from tests.test_code_lineage import commit_files, read_record, run_id_of

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

BACKEND = '''
"""A PEP 517/660 build backend in 30 lines: no setuptools, no network."""

import base64
import hashlib
import os
import pathlib
import zipfile

DIST = "acme_features-0.1.0"
INFO = [
    ("METADATA", "Metadata-Version: 2.1\\nName: acme-features\\nVersion: 0.1.0\\n"),
    ("WHEEL", "Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"),
]


def _wheel(directory, files):
    files = files + [(f"{DIST}.dist-info/{n}", t.encode()) for n, t in INFO]
    name, record = f"{DIST}-py3-none-any.whl", []
    with zipfile.ZipFile(os.path.join(directory, name), "w") as z:
        for arc, data in files:
            z.writestr(arc, data)
            h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{arc},sha256={h.decode()},{len(data)}")
        record.append(f"{DIST}.dist-info/RECORD,,")
        z.writestr(f"{DIST}.dist-info/RECORD", "\\n".join(record) + "\\n")
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    code = sorted(pathlib.Path("acme_features").rglob("*.py"))
    return _wheel(wheel_directory, [(p.as_posix(), p.read_bytes()) for p in code])


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    here = (os.path.abspath(".") + "\\n").encode()
    return _wheel(wheel_directory, [("acme_features.pth", here)])
'''

PYPROJECT = """
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "acme-features"
version = "0.1.0"
"""

FEATURES = """
def add_features(df):
    out = df.copy()
    out["charge_per_month_of_tenure"] = {formula}
    return out
"""
# the library's next commit changes what the feature is (same version number)
FORMULA_A = 'out["monthly_charges"] / (out["tenure_months"] + 1)'
FORMULA_B = 'out["monthly_charges"] * 0.0'

# the workspace's own code: the team's feature function, from the library
WORKSPACE_FEATURES = "from acme_features import add_features  # noqa: F401\n"
TOKEN = "glpat-Zt0kenNeverRecorded"


class PrivateLibrary:
    """The library's repo (two commits) and the venv it is installed into."""

    def __init__(self, base: Path):
        self.repo_dir = base / "acme-features"
        (self.repo_dir / "acme_features").mkdir(parents=True)
        self.repo = git.Repo.init(self.repo_dir, initial_branch="main")
        files = {"backend.py": BACKEND, "pyproject.toml": PYPROJECT}
        self.sha_a = self._commit(files | {"acme_features/__init__.py": FORMULA_A})
        self.sha_b = self._commit({"acme_features/__init__.py": FORMULA_B})
        self.url = self.repo_dir.as_uri()  # file:///.../acme-features

        venv = base / "venv"
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
        )
        self.python = str(venv / "bin" / "python")
        self.site = Path(
            subprocess.run(
                [
                    self.python,
                    "-c",
                    "import sysconfig; print(sysconfig.get_path('purelib'))",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        parent = site.getsitepackages()[0]  # this venv's: pip, mlflow, prefect, ...
        (self.site / "project.pth").write_text(
            f"import site; site.addsitedir({parent!r})\n"
        )

    def _commit(self, files: dict[str, str]) -> str:
        for name, text in files.items():
            if name.endswith("__init__.py"):
                text = FEATURES.format(formula=text)
            (self.repo_dir / name).write_text(textwrap.dedent(text).lstrip())
            self.repo.git.add(name)
        return self.repo.index.commit("acme-features").hexsha

    def pip_install(self, *args: str) -> None:
        proc = subprocess.run(
            [self.python, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
            + ["--no-build-isolation", "--disable-pip-version-check", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]

    def install_at(self, sha: str) -> None:
        self.pip_install("--force-reinstall", f"git+{self.url}@{sha}")

    def direct_url(self) -> Path:
        return self.site / "acme_features-0.1.0.dist-info" / "direct_url.json"

    def cli(self, *args: str, cwd: Path, env: dict, ok: bool = True):
        proc = subprocess.run(
            [self.python, "-m", "flows.cli", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        if ok:
            assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        return proc


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> PrivateLibrary:
    return PrivateLibrary(tmp_path_factory.mktemp("private-library"))


@pytest.fixture
def env(tracking, prefect_api_url) -> dict:
    """The CLI's environment: the session's stores, lineageflow from the snapshot
    of the code under test (PYTHONPATH, set by conftest)."""
    return dict(
        os.environ,
        MLFLOW_TRACKING_URI=tracking,
        PREFECT_API_URL=prefect_api_url,
        PIP_NO_INPUT="1",
    )


def features_workspace(make_workspace) -> Path:
    ws = make_workspace(**{"train.features": "features.py:add_features"}).workspace
    commit_files(ws, {"features.py": WORKSPACE_FEATURES}, "features from acme")
    return ws


def acme(record: dict) -> dict:
    (entry,) = [
        d
        for d in record["environment"]["distributions"]
        if d["name"] == "acme-features"
    ]
    return entry


def train_key(tracking: str, parent: str) -> str:
    c = MlflowClient(tracking)
    exp = c.get_run(parent).info.experiment_id
    (train,) = c.search_runs(
        [exp],
        f"tags.mlflow.parentRunId = '{parent}' and tags.`{TAG_STAGE}` = 'train'",
    )
    return train.data.tags[TAG_STAGE_KEY]


def test_a_library_installed_by_commit_is_recorded_pinned_and_promoted(
    library, make_workspace, env, tracking, tmp_path
):
    # the git server's URL carried a token: pip (26) already drops a password
    # from direct_url.json; an installer that keeps it is simulated here
    library.install_at(library.sha_a)
    url = json.loads(library.direct_url().read_text())["url"]
    assert url == library.url
    leaked = json.loads(library.direct_url().read_text())
    leaked["url"] = library.url.replace("file://", f"file://ci:{TOKEN}@")
    library.direct_url().write_text(json.dumps(leaked))

    ws = features_workspace(make_workspace)
    proc = library.cli("train", str(ws), cwd=tmp_path, env=env)
    name = make_workspace.model_name
    assert f"{name} v1 -> Staging" in proc.stdout, proc.stdout
    run_id = run_id_of(proc.stdout)

    record = read_record(tracking, run_id)
    assert acme(record) == {
        "name": "acme-features",
        "version": "0.1.0",
        "source": "vcs",
        "vcs": "git",
        "url": library.url,
        "requested_revision": library.sha_a,
        "commit_id": library.sha_a,
    }
    assert "acme-features" in record["environment"]["imported"]
    assert record["environment"]["packages"]["mlflow"]  # the older key stays

    c = MlflowClient(tracking)
    mv = c.get_model_version(name, "1")
    assert mv.tags["lineage.check.environment_pinned"] == "passed"
    # from this test's store only: MLflow's own `models:/` resolution asks the
    # process-wide tracking URI, which an earlier test may have pointed elsewhere
    model_dir = download(mv.source, tracking, tmp_path / "m")
    requirements = (model_dir / "requirements.txt").read_text().splitlines()
    assert f"acme-features @ git+{library.url}@{library.sha_a}" in requirements

    # the token is nowhere: record, tags, params, artifacts, the run's output
    seen = [proc.stdout, proc.stderr, json.dumps(mv.tags)]
    parent = c.get_run(run_id)
    runs = [parent] + c.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"
    )
    for run in runs:
        seen += [json.dumps(run.data.tags), json.dumps(run.data.params)]
    artifacts = Path(c.download_artifacts(run_id, "", str(tmp_path / "a")))
    for path in [*artifacts.rglob("*"), *model_dir.rglob("*")]:
        if path.is_file():
            seen.append(path.read_bytes().decode("utf-8", "replace"))
    assert seen[3:] and not [s for s in seen if TOKEN in s]


def test_an_editable_library_with_uncommitted_edits_is_refused(
    library, make_workspace, env, tracking, tmp_path
):
    checkout = tmp_path / "acme-features-checkout"
    git.Repo.clone_from(library.repo_dir, checkout)
    library.pip_install("-e", str(checkout))
    try:
        init = checkout / "acme_features" / "__init__.py"
        text = init.read_text()  # the library's main: FORMULA_B
        assert "* 0.0" in text
        init.write_text(text.replace("* 0.0", "* 0.5"))  # not committed
        ws = features_workspace(make_workspace)
        proc = library.cli("train", str(ws), cwd=tmp_path, env=env, ok=False)
        assert proc.returncode == 2, proc.stderr[-3000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert (
            "stays in None: environment_pinned: acme-features is editable from " in last
        )
        assert (
            f"{checkout} with uncommitted changes (acme_features/__init__.py)" in last
        )
        assert "commit and push them, install it by commit" in last

        name = make_workspace.model_name
        (mv,) = MlflowClient(tracking).search_model_versions(f"name = '{name}'")
        assert mv.current_stage == "None"
        tag = mv.tags["lineage.check.environment_pinned"]
        assert tag.startswith(f"failed: acme-features is editable from {checkout} ")
        assert "install it by commit (pip install 'acme-features @ git+" in tag
        # the other checks pass: this is the one that refused
        failed = [
            k
            for k, v in mv.tags.items()
            if k.startswith("lineage.check.") and v.startswith("failed")
        ]
        assert failed == ["lineage.check.environment_pinned"]
    finally:
        library.install_at(library.sha_a)


def test_a_reproduction_after_the_library_moved_names_it_and_both_commits(
    library, make_workspace, env, tracking, tmp_path
):
    library.install_at(library.sha_a)
    ws = features_workspace(make_workspace)
    run_id = run_id_of(library.cli("train", str(ws), cwd=tmp_path, env=env).stdout)

    library.install_at(library.sha_b)  # the team's library moved one commit
    try:
        # a retrain fits again: the library's commit is part of every stage key
        again = library.cli("train", str(ws), cwd=tmp_path, env=env, ok=False)
        assert "unchanged since run" not in again.stderr, again.stderr[-3000:]
        retrained = re.search(r"MLflow parent run ([0-9a-f]{32})", again.stderr)
        assert train_key(tracking, retrained.group(1)) != train_key(tracking, run_id)

        proc = library.cli("reproduce", run_id, cwd=tmp_path, env=env)
        moved = (
            f"acme-features 0.1.0 git@{library.sha_a[:12]} -> "
            f"0.1.0 git@{library.sha_b[:12]}"
        )
        assert moved in proc.stdout, proc.stdout
        c = MlflowClient(tracking)
        verdict = c.get_run(run_id).data.tags[TAG_REPRODUCTION_VERDICT]
        assert moved in verdict and verdict.split(" (")[0] in (
            "diverged",
            "within_tolerance",
            "exact",
        )
        new_id = c.get_run(run_id).data.tags[TAG_REPRODUCED_BY]
        record = read_record(tracking, new_id)
        assert acme(record)["commit_id"] == library.sha_b

        # `lineageflow diff` says the same, package by package
        diff = library.cli("diff", run_id, new_id, "--json", cwd=tmp_path, env=env)
        assert moved in json.loads(diff.stdout)["environment"]
    finally:
        library.install_at(library.sha_a)
