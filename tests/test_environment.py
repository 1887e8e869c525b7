"""The environment a run recorded: every distribution, read from real dist-info
directories (PEP 610 ``direct_url.json``) and real git checkouts; the check
environment_pinned and the package-level differences a reproduction names."""

from __future__ import annotations

import json
from importlib.metadata import Distribution, packages_distributions
from pathlib import Path

import git
import pytest

from lineageflow.lineage import checks, pins
from lineageflow.lineage import environment as env
from lineageflow.reproduce.reproduction import environment_differences

SHA_A, SHA_B = "a1" * 20, "b2" * 20
TOKEN = "ghp_s3cr3tT0ken"


def dist_info(
    root: Path, name: str, version: str, direct: dict | None = None, files=()
) -> Distribution:
    """A real installed distribution: METADATA, RECORD (with file hashes) and,
    when given, the direct_url.json pip writes."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )
    rows = [f"{f},sha256={h},1" for f, h in files]
    rows.append(f"{info.name}/RECORD,,")
    if direct is not None:
        (info / "direct_url.json").write_text(json.dumps(direct))
        rows.append(f"{info.name}/direct_url.json,sha256=differs-per-path,9")
    (info / "RECORD").write_text("\n".join(rows) + "\n")
    return Distribution.at(info)


def checkout(path: Path) -> git.Repo:
    """A library's git checkout with one commit."""
    (path / "acme_features").mkdir(parents=True)
    (path / "acme_features" / "__init__.py").write_text("def f(x):\n    return x\n")
    (path / "pyproject.toml").write_text("[project]\nname = 'acme-features'\n")
    repo = git.Repo.init(path)
    repo.git.add(A=True)
    repo.index.commit("acme-features 0.1.0")
    return repo


# ------------------------------------------------------------ credentials


@pytest.mark.parametrize(
    ("url", "recorded"),
    [
        (f"https://user:{TOKEN}@git.acme/x.git", "https://git.acme/x.git"),
        # GitHub takes a token as the user name: over https no user name stays
        (f"https://{TOKEN}@github.com/acme/x.git", "https://github.com/acme/x.git"),
        # ssh: the key authenticates; the account name `git` is no secret
        (
            "ssh://git@git.acme/acme-features.git",
            "ssh://git@git.acme/acme-features.git",
        ),
        (f"ssh://git:{TOKEN}@git.acme/x.git", "ssh://git.acme/x.git"),
        # PEP 610: an environment variable's name is kept, its value never read
        ("https://${TOKEN}@git.acme/x.git", "https://${TOKEN}@git.acme/x.git"),
        ("https://git.acme:8443/x.git", "https://git.acme:8443/x.git"),
        ("file:///srv/acme-features", "file:///srv/acme-features"),
        # a token in the query (GitLab), a signed archive URL: no query stays
        (f"https://git.acme/x.git?private_token={TOKEN}", "https://git.acme/x.git"),
        (
            f"https://s3.acme/w/x-1-py3-none-any.whl?X-Amz-Signature={TOKEN}&a=b",
            "https://s3.acme/w/x-1-py3-none-any.whl",
        ),
        # of a fragment, only what pip reads
        (
            f"https://git.acme/x.git#token={TOKEN}&egg=x&subdirectory=libs/x",
            "https://git.acme/x.git#egg=x&subdirectory=libs/x",
        ),
        (f"https://git.acme/x.git#{TOKEN}", "https://git.acme/x.git"),
    ],
)
def test_credentials_are_stripped_from_urls(url, recorded):
    assert env.strip_credentials(url) == recorded


# ------------------------------------------------------------ direct_url.json


def test_a_vcs_install_is_recorded_with_its_commit_and_without_the_token(tmp_path):
    d = dist_info(
        tmp_path,
        "acme-features",
        "0.1.0",
        {
            "url": f"https://ci:{TOKEN}@git.acme/acme-features.git",
            "vcs_info": {
                "vcs": "git",
                "requested_revision": "v0.1",
                "commit_id": SHA_A,
            },
        },
    )
    entry = env.describe(d)
    assert entry == {
        "name": "acme-features",
        "version": "0.1.0",
        "source": "vcs",
        "vcs": "git",
        "url": "https://git.acme/acme-features.git",
        "requested_revision": "v0.1",
        "commit_id": SHA_A,
    }
    assert TOKEN not in json.dumps(entry)
    assert pins.unpinned(entry) is None


def test_a_query_token_is_recorded_nowhere_and_a_subdirectory_is_pinned(tmp_path):
    d = dist_info(
        tmp_path,
        "acme-features",
        "0.1.0",
        {
            "url": f"https://git.acme/mono.git?private_token={TOKEN}",
            "vcs_info": {"vcs": "git", "commit_id": SHA_A},
            "subdirectory": "libs/acme-features",
        },
    )
    entry = env.describe(d)
    assert entry["url"] == "https://git.acme/mono.git"
    assert entry["subdirectory"] == "libs/acme-features"
    record = record_with(entry)
    ok, reason = pins.pinned_check(record)
    assert ok
    pinned = env.pinned_requirements(["numpy==2.0.0"], [entry], ["acme-features"])
    assert pinned == [
        "numpy==2.0.0",
        f"acme-features @ git+https://git.acme/mono.git@{SHA_A}"
        "#subdirectory=libs/acme-features",
    ]
    assert TOKEN not in json.dumps([record, reason, pinned, pins.label(entry)])

    wheel = dist_info(
        tmp_path / "site2",
        "acme-models",
        "1.0",
        {
            "url": f"https://s3.acme/w/m-1.0-py3-none-any.whl?X-Amz-Signature={TOKEN}",
            "archive_info": {},
        },
    )
    assert TOKEN not in json.dumps(env.describe(wheel))


def test_a_release_from_an_index_is_name_and_version(tmp_path):
    d = dist_info(tmp_path, "requests", "2.32.3")
    assert env.describe(d) == {
        "name": "requests",
        "version": "2.32.3",
        "source": "index",
    }


def test_a_local_directory_and_an_archive_carry_a_content_hash(tmp_path):
    files = [("acme_features/__init__.py", "abc"), ("acme_features/core.py", "def")]
    src = tmp_path / "src"
    src.mkdir()
    d = dist_info(
        tmp_path / "site1",
        "acme-features",
        "0.1.0",
        {"url": src.as_uri(), "dir_info": {}},
        files,
    )
    entry = env.describe(d)
    assert entry["source"] == "dir" and entry["path"] == str(src)
    assert "commit" not in entry  # what pip copied: no commit is claimed for it
    assert pins.unpinned(entry) == (
        f"acme-features was installed from the directory {src}, which no commit "
        "names: install it by commit: pip install 'acme-features @ "
        "git+…@<commit>', or release it to your package index"
    )
    # the hash is of the installed files (RECORD), not of where pip found them
    other = dist_info(
        tmp_path / "site2",
        "acme-features",
        "0.1.0",
        {"url": (tmp_path / "elsewhere").as_uri(), "dir_info": {}},
        files,
    )
    assert env.describe(other)["sha256"] == entry["sha256"]
    changed = dist_info(
        tmp_path / "site3",
        "acme-features",
        "0.1.0",
        {"url": src.as_uri(), "dir_info": {}},
        [files[0], ("acme_features/core.py", "CHANGED")],
    )
    assert env.describe(changed)["sha256"] != entry["sha256"]

    wheel = tmp_path / "acme_features-0.1.0-py3-none-any.whl"
    a = dist_info(
        tmp_path / "site4",
        "acme-features",
        "0.1.0",
        {"url": wheel.as_uri(), "archive_info": {"hashes": {"sha256": "f" * 64}}},
        files,
    )
    entry = env.describe(a)
    assert entry["source"] == "archive" and entry["sha256"] == env.describe(d)["sha256"]
    assert pins.unpinned(entry) is None


def test_a_directory_install_from_a_checkout_claims_none_of_its_commits(tmp_path):
    """pip copied the files at install time; the checkout's HEAD now may hold
    other code, so neither its commit nor its state is recorded."""
    lib = tmp_path / "acme-features"
    checkout(lib)
    d = dist_info(
        tmp_path / "site",
        "acme-features",
        "0.1.0",
        {"url": lib.as_uri(), "dir_info": {}},
        [("acme_features/__init__.py", "abc")],
    )
    entry = env.describe(d)
    assert {"commit", "dirty", "dirty_files"}.isdisjoint(entry)
    assert entry["sha256"]
    bad = checks.check_environment_pinned(record_with(entry))
    assert not bad.passed and "release it to your package index" in bad.reason


def test_an_editable_install_records_its_checkout_commit_and_dirty_files(tmp_path):
    lib = tmp_path / "acme-features"
    repo = checkout(lib)
    d = dist_info(
        tmp_path / "site",
        "acme-features",
        "0.1.0",
        {"url": lib.as_uri(), "dir_info": {"editable": True}},
    )
    clean = env.describe(d)
    assert clean["source"] == "editable" and clean["path"] == str(lib)
    assert clean["commit"] == repo.head.commit.hexsha
    assert clean["dirty"] is False and clean["dirty_files"] == []
    assert pins.unpinned(clean) is None  # a clean checkout is pinned by its commit

    # what pip or python leave in the checkout is not the library; the rest is
    (lib / "acme_features.egg-info").mkdir()
    (lib / "acme_features.egg-info" / "PKG-INFO").write_text("x")
    assert env.describe(d)["dirty"] is False
    (lib / "acme_features" / "__pycache__").mkdir()
    (lib / "acme_features" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    assert env.describe(d)["dirty"] is False
    # an untracked data or config file changes the library as an edit does
    (lib / "acme_features" / "bins.json").write_text("[1, 2]")
    assert env.describe(d)["dirty_files"] == ["acme_features/bins.json"]
    (lib / ".gitignore").write_text("*.json\n")  # what git ignores is not counted
    repo.git.add(".gitignore")
    repo.index.commit("ignore json")
    assert env.describe(d)["dirty"] is False
    (lib / "acme_features" / "__init__.py").write_text("def f(x):\n    return -x\n")
    (lib / "acme_features" / "extra.py").write_text("")
    dirty = env.describe(d)
    assert dirty["dirty"] is True
    assert dirty["dirty_files"] == [
        "acme_features/__init__.py",
        "acme_features/extra.py",
    ]
    reason = pins.unpinned(dirty)
    assert reason.startswith(f"acme-features is editable from {lib} with uncommitted")
    assert "(acme_features/__init__.py, acme_features/extra.py)" in reason
    assert "commit and push them, install it by commit" in reason


def test_an_editable_install_outside_git_has_no_commit(tmp_path):
    (tmp_path / "plain").mkdir()
    d = dist_info(
        tmp_path / "site",
        "acme-features",
        "0.1.0",
        {"url": (tmp_path / "plain").as_uri(), "dir_info": {"editable": True}},
    )
    entry = env.describe(d)
    assert entry["commit"] is None
    assert "which no git commit holds" in pins.unpinned(entry)


# ------------------------------------------------------------ this process


def test_installed_lists_every_distribution_once():
    first = env.installed()
    names = [env.canonical(d["name"]) for d in first]
    assert names == sorted(set(names))
    assert {"mlflow", "prefect", "gitpython", "lineageflow"} <= set(names)
    assert env.installed() == first  # the cached scan gives the same answer


def test_imported_maps_modules_to_distributions():
    import git  # noqa: F401  (gitpython)

    assert "gitpython" in env.imported()
    assert env.imported(["json"]) == env.imported()  # stdlib: no distribution
    # a module imported elsewhere (e.g. in a notebook's kernel), handed in
    here = set(env.imported())
    top, owners = next(
        (top, [env.canonical(o) for o in owners])
        for top, owners in sorted(packages_distributions().items())
        if top.isidentifier() and not {env.canonical(o) for o in owners} & here
    )
    assert set(owners) <= set(env.imported([f"{top}.sub"]))


def test_pinned_requirements_pin_imported_vcs_installs_by_commit():
    dists = [
        {"name": "numpy", "version": "2.0.0", "source": "index"},
        {
            "name": "acme-features",
            "version": "0.1.0",
            "source": "vcs",
            "vcs": "git",
            "url": "https://git.acme/acme-features.git",
            "commit_id": SHA_A,
        },
        {
            "name": "acme_unused",
            "version": "1",
            "source": "vcs",
            "vcs": "git",
            "url": "https://git.acme/u.git",
            "commit_id": SHA_B,
        },
    ]
    base = ["numpy==2.0.0", "acme-features==0.0.9"]
    got = env.pinned_requirements(base, dists, ["numpy", "Acme_Features"])
    assert got == [
        "numpy==2.0.0",
        f"acme-features @ git+https://git.acme/acme-features.git@{SHA_A}",
    ]


# ------------------------------------------------------------ the check


def record_with(*dists: dict, imported=None) -> dict:
    names = [env.canonical(d["name"]) for d in dists]
    return {
        "environment": {
            "packages": {},
            "distributions": list(dists),
            "imported": names if imported is None else imported,
        }
    }


VCS = {
    "name": "acme-features",
    "version": "0.1.0",
    "source": "vcs",
    "vcs": "git",
    "url": "https://git.acme/acme-features.git",
    "requested_revision": None,
    "commit_id": SHA_A,
}
DIRTY = {
    "name": "acme-features",
    "version": "0.1.0",
    "source": "editable",
    "url": "file:///src/acme-features",
    "path": "/src/acme-features",
    "commit": SHA_B,
    "dirty": True,
    "dirty_files": ["acme_features/core.py"],
}


def test_environment_pinned_refuses_what_nobody_could_install_again():
    check = checks.check_environment_pinned
    ok = check(record_with({"name": "numpy", "version": "2", "source": "index"}, VCS))
    assert ok.passed and "acme-features by commit" in ok.reason

    bad = check(record_with(DIRTY))
    assert not bad.passed
    assert bad.reason.startswith(
        "acme-features is editable from /src/acme-features with uncommitted changes "
        f"(acme_features/core.py) on {SHA_B[:12]}: commit and push them, install it "
        "by commit (pip install 'acme-features @ git+<url>@<commit>')"
    )
    no_commit = check(record_with(VCS | {"commit_id": None}))
    assert not no_commit.passed
    assert no_commit.reason.startswith(
        "acme-features was installed from https://git.acme/acme-features.git "
        "with no commit id: install it by commit"
    )

    # only what the run imported counts
    assert check(record_with(DIRTY, imported=[])).passed
    # lineageflow's own checkout is code_committed's (reported once, there)
    pipeline = DIRTY | {"name": "lineageflow", "pipeline": True}
    assert check(record_with(pipeline)).passed
    assert check(record_with(DIRTY | {"name": "lineageflow"})).passed


def test_a_record_made_before_distributions_passes_and_says_why():
    old = {"environment": {"python": "3.11.7", "packages": {"mlflow": "3.17.2"}}}
    got = checks.check_environment_pinned(old)
    assert got.passed and got.reason.startswith("recorded by older code")


# ------------------------------------------------------------ differences


def test_a_library_at_another_commit_is_named_with_both_commits():
    then = record_with(VCS)
    now = record_with(VCS | {"commit_id": SHA_B})
    assert environment_differences(then, now) == [
        f"acme-features 0.1.0 git@{SHA_A[:12]} -> 0.1.0 git@{SHA_B[:12]}"
    ]
    assert environment_differences(then, then) == []
    moved = record_with(DIRTY | {"dirty": False, "commit": SHA_A})
    assert environment_differences(moved, record_with(DIRTY)) == [
        f"acme-features 0.1.0 editable@{SHA_A[:12]} -> "
        f"0.1.0 editable@{SHA_B[:12]} (dirty)"
    ]


def test_records_without_distributions_compare_their_packages():
    old = {"environment": {"python": "3.11.7", "packages": {"xgboost": "3.1.0"}}}
    new = record_with(VCS)
    new["environment"] |= {"python": "3.11.7", "packages": {"xgboost": "3.2.0"}}
    assert environment_differences(old, new) == ["xgboost 3.1.0 -> 3.2.0"]


# ------------------------------------------------------------ stage reuse


def test_a_library_at_another_commit_is_another_reuse_basis():
    release = {"name": "numpy", "version": "2", "source": "index"}
    pipeline = DIRTY | {"name": "lineageflow", "pipeline": True}
    assert pins.private_identity([release, pipeline]) == []  # keys stay as before
    at_a = pins.private_identity([release, VCS])
    assert at_a == [f"acme-features 0.1.0 git@{SHA_A[:12]}"]
    assert at_a != pins.private_identity([VCS | {"commit_id": SHA_B}])
    # edits no commit names: no basis, so nothing is reused
    assert pins.private_identity([release, DIRTY]) is None
    assert pins.private_identity([VCS | {"commit_id": None}]) is None
    # a wheel installed from a file is a release: its version names it, so
    # `pip install /wheels/*.whl` images keep the keys they had
    wheel = {"name": "acme-models", "version": "1.0", "source": "archive"}
    assert pins.private_identity([release, wheel | {"sha256": "f" * 64}]) == []
    # a directory install is named by its installed files' hash
    copied = {"name": "acme-dir", "version": "1", "source": "dir", "path": "/x"}
    at_c = pins.private_identity([copied | {"sha256": "c" * 64}])
    assert at_c == [f"acme-dir 1 dir sha256 {'c' * 12}"]
    assert at_c != pins.private_identity([copied | {"sha256": "d" * 64}])
    assert pins.private_identity([copied]) is None


def test_the_record_takes_module_names_imported_elsewhere():
    """RunContext.record(modules=...) -> build_record -> environment(modules):
    the path a notebook's kernel's imports take into the record."""
    from lineageflow.lineage.record import build_record

    here = set(env.imported())
    top, owner = next(
        (top, env.canonical(owners[0]))
        for top, owners in sorted(packages_distributions().items())
        if top.isidentifier() and not {env.canonical(o) for o in owners} & here
    )
    ws = {"repo": "r", "path": "p", "commit": "c" * 40, "branch": "main"}
    kw = dict(
        workspace=ws | {"dirty": False},
        data=[],
        params={},
        params_sha256="0",
        orchestration={},
        mlflow_ids={},
        pipeline={},
    )
    record = build_record(**kw, modules=[top])
    assert owner in record["environment"]["imported"]
    assert owner not in build_record(**kw)["environment"]["imported"]
    assert record["environment"]["packages"]  # the fixed list stays


# ------------------------------------------------------------ a real editable install

# hatchling, flit, pdm and poetry install editable as this backend does: a wheel
# holding one .pth (the checkout's directory) and a dist-info with no
# top_level.txt, so RECORD names no module of the library
PTH_BACKEND = """
import base64, hashlib, os, zipfile

DIST = "acme_pth-0.1.0"
META = "Metadata-Version: 2.1\\nName: acme-pth\\nVersion: 0.1.0\\n"
WHEEL = "Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    files = [
        ("_acme_pth.pth", (os.path.abspath(".") + "\\n").encode()),
        (f"{DIST}.dist-info/METADATA", META.encode()),
        (f"{DIST}.dist-info/WHEEL", WHEEL.encode()),
    ]
    name, record = f"{DIST}-py3-none-any.whl", []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for arc, data in files:
            z.writestr(arc, data)
            h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{arc},sha256={h.decode()},{len(data)}")
        record.append(f"{DIST}.dist-info/RECORD,,")
        z.writestr(f"{DIST}.dist-info/RECORD", "\\n".join(record) + "\\n")
    return name
"""

# run in the venv the library is installed into, with the code under test
PROBE = """
import json, sys
from lineageflow.lineage.environment import imported, installed
from lineageflow.lineage.pins import pinned_check
if sys.argv[1] == "import":
    import acme_pth.core  # noqa: F401
used = imported(sys.argv[2:])  # as a notebook's kernel hands its imports in
record = {"environment": {"distributions": installed(), "imported": used}}
print(json.dumps([used, *pinned_check(record)]))
"""


def test_an_editable_install_named_by_a_pth_only_is_checked(tmp_path):
    import site
    import subprocess
    import sys

    import lineageflow

    lib = tmp_path / "acme-pth"
    (lib / "acme_pth").mkdir(parents=True)
    (lib / "acme_pth" / "__init__.py").write_text("")
    (lib / "acme_pth" / "core.py").write_text("SCALE = 1\n")
    (lib / "backend.py").write_text(PTH_BACKEND)
    (lib / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\n'
        'backend-path = ["."]\n\n[project]\nname = "acme-pth"\nversion = "0.1.0"\n'
    )
    repo = git.Repo.init(lib)
    repo.git.add(A=True)
    repo.index.commit("acme-pth 0.1.0")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = str(venv / "bin" / "python")
    (purelib,) = venv.glob("lib/python*/site-packages")
    parent = site.getsitepackages()[0]  # pip and lineageflow's dependencies
    (purelib / "project.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    pip += ["--no-build-isolation", "--disable-pip-version-check", "-e", str(lib)]
    subprocess.run(pip, check=True, capture_output=True, timeout=120)
    (info,) = purelib.glob("acme_pth-0.1.0.dist-info")
    assert not (info / "top_level.txt").exists()
    assert "acme_pth/" not in (info / "RECORD").read_text()  # only the .pth

    code = str(Path(lineageflow.__file__).parent.parent)
    run_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": code, "HOME": str(tmp_path)}

    def probe(*args: str) -> tuple[list[str], bool, str]:
        proc = subprocess.run(
            [python, "-c", PROBE, *args],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)

    used, ok, _ = probe("import")
    assert "acme-pth" in used and ok  # a clean checkout: pinned by its commit
    (lib / "acme_pth" / "core.py").write_text("SCALE = 2\n")  # not committed
    used, ok, reason = probe("import")
    assert "acme-pth" in used and not ok
    assert reason.startswith(f"acme-pth is editable from {lib} with uncommitted")
    assert "(acme_pth/core.py)" in reason
    # a module imported in a notebook's kernel, handed in by name
    used, ok, _ = probe("-", "acme_pth.core")
    assert "acme-pth" in used and not ok
    used, ok, _ = probe("-")
    assert "acme-pth" not in used and ok
